"""Wire codecs for XenAPI calls: XML-RPC and JSON-RPC."""
