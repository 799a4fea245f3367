// Files: list (newest first), download (fetched with the bearer header), delete.
import { downloadFile, getJson, request, type FileObject, type List } from '../api.js'
import { clear, fmtBytes, fmtTime, h } from '../dom.js'

export function filesPage (main: HTMLElement): () => void {
  const body = h('tbody')
  const note = h('p', { class: 'muted' })
  clear(main, h('div', { class: 'page-head' }, h('h1', {}, 'Files')),
    h('div', { class: 'table-wrap' }, h('table', { class: 'files', 'data-testid': 'files-table' },
      h('thead', {}, h('tr', {}, ...['Name', 'Purpose', 'Size', 'Created', 'Status', ''].map(t => h('th', {}, t)))), body)),
    note)
  async function load (): Promise<void> {
    const list = await getJson<List<FileObject>>('/v1/files?limit=1000')
    clear(body, ...list.data.map(f => {
      const dl = h('button', { type: 'button', class: 'small' }, 'Download')
      const del = h('button', { type: 'button', class: 'small danger' }, 'Delete')
      dl.addEventListener('click', () => { downloadFile(f.id).catch((err: Error) => { note.textContent = `Download failed: ${err.message}` }) })
      del.addEventListener('click', () => {
        if (!confirm(`Delete ${f.filename}?`)) return
        request(`/v1/files/${encodeURIComponent(f.id)}`, { method: 'DELETE' })
          .then(load, (err: Error) => { note.textContent = `Not deleted: ${err.message}` })
      })
      return h('tr', { 'data-file-id': f.id },
        h('td', { 'data-label': 'Name' }, f.filename, h('br'), h('code', { class: 'muted' }, f.id)),
        h('td', { 'data-label': 'Purpose' }, f.purpose),
        h('td', { 'data-label': 'Size' }, fmtBytes(f.bytes)),
        h('td', { 'data-label': 'Created' }, fmtTime(f.created_at)),
        h('td', { 'data-label': 'Status' }, f.status ?? ''),
        h('td', {}, h('div', { class: 'buttons' }, dl, del)))
    }))
    if (list.data.length === 0) note.textContent = 'No files yet.'
  }
  load().catch((err: Error) => { note.textContent = `Could not list the files: ${err.message}` })
  return () => {}
}
