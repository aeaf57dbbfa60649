// Xen Orchestra's connector (npm "xen-api") moving a VDI's content in and
// out through a pool's master when the VDI is on an SR that only a slave
// has plugged: the master answers 302 and the connector follows (its
// putResource probes the URL with an empty PUT first, then sends the body
// to the host named; getResource asks again at the Location).  Prints one
// JSON object on stdout; the VDI is left for the caller to check.
//
//   node pool_content.mjs URL USER PASSWORD SR_REF

import { createClient } from 'xen-api'

import { contentRoundTrip } from './content.mjs'

const [url, user, password, srRef] = process.argv.slice(2)
if (srRef === undefined) {
  console.error('usage: node pool_content.mjs URL USER PASSWORD SR_REF')
  process.exit(2)
}

const xapi = createClient({ url, auth: { user, password }, allowUnauthorized: true, debounce: 50 })
let result = {}
let code = 0
try {
  await xapi.connect()
  result = { ...(await contentRoundTrip(xapi, srRef)), ok: true }
} catch (error) {
  result.ok = false
  result.error = String(error?.stack ?? error)
  code = 1
}
process.stdout.write(JSON.stringify(result) + '\n')
try {
  await Promise.race([xapi.disconnect(), new Promise(resolve => setTimeout(resolve, 2000).unref())])
} catch (error) {}
process.exit(code)
