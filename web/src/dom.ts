// A tiny element builder: h('div', { class: 'x', onclick }, 'text', child). Text is always set as
// text (never innerHTML), so nothing the server or a file says can become markup.
type Child = Node | string | number | null | undefined | false
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>

export function h<K extends keyof HTMLElementTagNameMap> (
  tag: K, attrs: Attrs = {}, ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v)
    else if (k === 'value' && 'value' in el) (el as HTMLInputElement).value = String(v)
    else if (k === 'checked' && 'checked' in el) (el as HTMLInputElement).checked = Boolean(v)
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  append(el, ...children)
  return el
}

export function append (el: Element, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue
    el.append(typeof c === 'object' ? c : String(c))
  }
}

export function clear (el: Element, ...children: Child[]): void {
  el.replaceChildren()
  append(el, ...children)
}

export function fmtTime (unix: number | null | undefined): string {
  if (!unix) return '—'
  const d = new Date(unix * 1000)
  return d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' })
}

export function fmtEta (unix: number | null | undefined): string {
  if (!unix) return '—'
  const s = Math.round(unix - Date.now() / 1000)
  if (s <= 0) return 'any moment'
  if (s < 90) return `in ${s} s`
  if (s < 5400) return `in ${Math.round(s / 60)} min`
  return `in ${(s / 3600).toFixed(1)} h`
}

export function fmtNum (v: unknown, digits = 4): string {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '—'
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e6)) return v.toExponential(2)
  return Number(v.toPrecision(digits)).toString()
}

export function fmtBytes (n: number): string {
  if (n < 1024) return `${n} B`
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`
  return `${(n / 1024 ** 3).toFixed(2)} GiB`
}
