// Xen Orchestra's stats view against a server: the connector (npm
// "xen-api") fetches /rrd_updates of a host the way xo-server's
// xapi-stats does (cf=AVERAGE, host=true, interval, json=true, start from
// the host's own clock), with the task the connector makes for every
// resource.  Prints one JSON object on stdout.
//
//   node stats.mjs URL USER PASSWORD

import { createClient } from 'xen-api'

const [url, user, password] = process.argv.slice(2)
const STEP = Number(process.env.XO_STATS_STEP ?? 5)

const xapi = createClient({
  url,
  auth: { user, password },
  allowUnauthorized: true,
  debounce: 50,
})

function parseServerTime(text) {
  // 20261207T07:05:00Z
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/.exec(text)
  return Date.UTC(m[1], m[2] - 1, m[3], m[4], m[5], m[6]) / 1e3
}

async function main() {
  await xapi.connect()
  await xapi.objectsFetched
  const host = Object.values(xapi.objects.all).find(o => o.$type === 'host')
  const now = parseServerTime(await xapi.call('host.get_servertime', host.$ref))
  const response = await xapi.getResource('/rrd_updates', {
    host,
    query: {
      cf: 'AVERAGE',
      host: 'true',
      interval: STEP,
      json: 'true',
      start: now - 60,
    },
  })
  const doc = JSON.parse(await response.body.text())
  const task = response.task === undefined ? 'none' : await Promise.race([
    response.task.then(() => 'success', e => 'failure: ' + e),
    // unref: a timer left behind must not keep node running for 20 s.
    new Promise(resolve => setTimeout(() => resolve('pending'), 20e3).unref()),
  ])
  return { ok: true, meta: doc.meta, rows: doc.data.length, first: doc.data[0], task }
}

main().then(
  result => {
    console.log(JSON.stringify(result))
    return xapi.disconnect()
  },
  error => {
    console.log(JSON.stringify({ ok: false, error: String(error && error.stack || error) }))
    process.exitCode = 1
    return xapi.disconnect()
  }
)
