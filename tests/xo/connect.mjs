// Drive Xen Orchestra's XAPI connector (npm "xen-api") against a server:
// connect, wait for its object cache (filled by get_all_records, then kept
// up to date by event.from), see a change made by a plain call arrive
// through events, and run Async calls whose completion the connector learns
// from task events; then a VDI's content in and out through putResource
// and getResource, called as xo-server's VDI import and export call them.
// Prints one JSON object on stdout.
//
//   node connect.mjs URL USER PASSWORD

import { createClient } from 'xen-api'

import { contentRoundTrip } from './content.mjs'

const [url, user, password] = process.argv.slice(2)
if (password === undefined) {
  console.error('usage: node connect.mjs URL USER PASSWORD')
  process.exit(2)
}

const STEP_TIMEOUT = Number(process.env.XO_STEP_TIMEOUT ?? 60) * 1e3

const xapi = createClient({
  url,
  auth: { user, password },
  allowUnauthorized: true,
  // the default 200 ms pause between event.from calls slows the test only
  debounce: 50,
})

const result = { steps: [] }
const started = Date.now()

function step(name, extra = {}) {
  result.steps.push({ name, ms: Date.now() - started, ...extra })
}

function ofType(type) {
  return Object.values(xapi.objects.all).filter(o => o.$type === type)
}

// Resolve once predicate() holds, re-checking whenever the cache changes.
function until(what, predicate) {
  return new Promise((resolve, reject) => {
    const check = () => {
      let value
      try {
        value = predicate()
      } catch (error) {
        value = undefined
      }
      if (value) {
        done()
        resolve(value)
      }
    }
    const timer = setTimeout(() => {
      done()
      reject(new Error('timed out waiting for ' + what))
    }, STEP_TIMEOUT)
    const done = () => {
      clearTimeout(timer)
      xapi.objects.removeListener('add', check)
      xapi.objects.removeListener('update', check)
      xapi.objects.removeListener('remove', check)
    }
    xapi.objects.on('add', check)
    xapi.objects.on('update', check)
    xapi.objects.on('remove', check)
    check()
  })
}

async function main() {
  await xapi.connect()
  step('connected', { status: xapi.status })

  await xapi.objectsFetched
  await until('pool, host and VMs', () =>
    ofType('pool').length && ofType('host').length && ofType('VM').length
  )
  const pool = ofType('pool')[0]
  result.pool = { ref: pool.$ref, uuid: pool.uuid, master: pool.master }
  result.hosts = ofType('host').map(h => ({ ref: h.$ref, name_label: h.name_label }))
  result.vms = ofType('VM').map(v => ({
    ref: v.$ref,
    name_label: v.name_label,
    is_control_domain: v.is_control_domain,
  }))
  step('cache filled', { objects: Object.keys(xapi.objects.all).length })

  // A change made through a plain call must reach the cache by events.
  const netRef = await xapi.call('network.create', {
    name_label: 'xo-check',
    name_description: 'created by the XO connector check',
    MTU: '1500',
    other_config: {},
  })
  await until('the new network in the cache', () => xapi.getObjectByRef(netRef, undefined))
  step('add seen', { ref: netRef })
  await xapi.call('network.set_name_label', netRef, 'xo-check-renamed')
  const renamed = await until(
    'the renamed network',
    () => xapi.getObjectByRef(netRef, undefined)?.name_label === 'xo-check-renamed' && xapi.getObjectByRef(netRef)
  )
  result.renamed = { ref: netRef, name_label: renamed.name_label }
  step('mod seen')

  // Async calls: the connector waits for the task through event.from.
  const asyncRef = await xapi.callAsync('network.create', {
    name_label: 'xo-check-async',
    name_description: '',
    MTU: '1500',
    other_config: {},
  })
  result.async_create = { ref: asyncRef }
  await until('the async network in the cache', () => xapi.getObjectByRef(asyncRef, undefined))
  step('async create done', { ref: asyncRef })
  const destroyed = await xapi.callAsync('network.destroy', asyncRef)
  result.async_destroy = { result: destroyed }
  await until('the async network gone', () => xapi.getObjectByRef(asyncRef, undefined) === undefined)
  await xapi.call('network.destroy', netRef)
  await until('the network gone', () => xapi.getObjectByRef(netRef, undefined) === undefined)
  step('del seen')

  try {
    await xapi.callAsync('network.destroy', 'OpaqueRef:00000000-0000-0000-0000-000000000000')
    result.async_failure = null
  } catch (error) {
    result.async_failure = { code: error.code, params: error.params }
  }
  step('async failure seen')

  result.content = await contentRoundTrip(xapi, await xapi.call('pool.get_default_SR', pool.$ref), step)
  await xapi.call('VDI.destroy', result.content.vdi)

  result.watch_events_error = xapi.watchEventsError ? String(xapi.watchEventsError) : null
  result.ok = true
}

let code = 0
try {
  await main()
} catch (error) {
  result.ok = false
  result.error = String(error?.stack ?? error)
  code = 1
}
result.ms = Date.now() - started
process.stdout.write(JSON.stringify(result) + '\n')
try {
  await Promise.race([xapi.disconnect(), new Promise(resolve => setTimeout(resolve, 2000).unref())])
} catch (error) {}
// a long-poll event.from may still be in flight
process.exit(code)
