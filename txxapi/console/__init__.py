"""
The /console handler: CONNECT (and GET with a websocket upgrade) to a
VM's console, authenticated as XAPI's data handlers are, then a relay
between the client and the console server the backend offers on a
loopback port.
"""
