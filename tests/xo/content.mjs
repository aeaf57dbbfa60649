// A VDI's content in and out through Xen Orchestra's connector, as
// xo-server's VDI importContent and exportContent call it: '/import_raw_vdi/'
// and '/export_raw_vdi/' (trailing slash), a task of their own passed as
// task_id; the upload is a stream with a length, so putResource first
// probes the URL with an empty PUT (and follows a 302 it gets).

import { createHash, randomBytes } from 'crypto'
import { Readable } from 'stream'

const sha256 = data => createHash('sha256').update(data).digest('hex')

// The round trip of 4 MiB (data at the start and the end, a hole between)
// through a new VDI on srRef; step(name) is called after each half.
export async function contentRoundTrip(xapi, srRef, step = () => {}) {
  const size = 4 * 1024 * 1024
  const vdiRef = await xapi.call('VDI.create', {
    name_label: 'xo-content',
    name_description: '',
    SR: srRef,
    virtual_size: String(size),
    type: 'user',
    sharable: false,
    read_only: false,
    other_config: {},
    xenstore_data: {},
    sm_config: {},
    tags: [],
  })
  const content = Buffer.alloc(size)
  randomBytes(64 * 1024).copy(content, 0)
  randomBytes(64 * 1024).copy(content, size - 64 * 1024)
  const stream = Readable.from([content])
  stream.length = size

  const importTask = await xapi.call('task.create', 'Importing content into VDI xo-content', '')
  await xapi.putResource(stream, '/import_raw_vdi/', {
    query: { format: 'raw', vdi: vdiRef },
    task: importTask,
  })
  step('content imported')

  const exportTask = await xapi.call('task.create', 'Exporting content of VDI xo-content', '')
  const response = await xapi.getResource('/export_raw_vdi/', {
    query: { format: 'raw', vdi: vdiRef },
    task: exportTask,
  })
  const exported = Buffer.from(await response.body.arrayBuffer())
  await response.task
  step('content exported')

  return {
    vdi: vdiRef,
    size,
    exported_size: exported.length,
    same: sha256(exported) === sha256(content),
    import_task: await xapi.call('task.get_status', importTask),
    export_task: await xapi.call('task.get_status', exportTask),
  }
}
