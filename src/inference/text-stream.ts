// Generated token ids → text, one token at a time, for streaming: what is safe to show so far,
// holding back a trailing incomplete UTF-8 character (decoded as U+FFFD) and any tail that could be
// the start of a stop string, and cutting the text where a stop string first appears.
import type { Tokenizer } from 'tokenizers'

export class TextStream {
  private readonly ids: number[] = []
  private text = ''
  private shown = 0
  private readonly longestStop: number
  /** True once a stop string appeared: the text ends just before it. */
  stopped = false

  constructor (private readonly tokenizer: Tokenizer, private readonly stops: readonly string[]) {
    this.longestStop = Math.max(0, ...stops.map(s => s.length))
  }

  /** Adds a token; returns the text that may be shown now (possibly empty). */
  async push (id: number): Promise<string> {
    if (this.stopped) return ''
    this.ids.push(id)
    this.text = await this.tokenizer.decode(this.ids, true)
    const cut = this.firstStop()
    if (cut !== -1) {
      this.stopped = true
      this.text = this.text.slice(0, cut)
      return this.take(this.text.length)
    }
    let safe = this.text.length
    while (safe > this.shown && this.text.charCodeAt(safe - 1) === 0xFFFD) safe--
    return this.take(safe - this.heldForStop(safe))
  }

  /** At the end: everything not shown yet (no stop string can complete any more). */
  flush (): string {
    return this.take(this.text.length)
  }

  private take (end: number): string {
    if (end <= this.shown) return ''
    const out = this.text.slice(this.shown, end)
    this.shown = end
    return out
  }

  private firstStop (): number {
    const from = this.shown // a stop string never starts in shown text: its start is held back
    let first = -1
    for (const stop of this.stops) {
      const at = this.text.indexOf(stop, from)
      if (at !== -1 && (first === -1 || at < first)) first = at
    }
    return first
  }

  /** Length of the longest tail of text[0, end) that some stop string starts with. */
  private heldForStop (end: number): number {
    for (let n = Math.min(this.longestStop - 1, end - this.shown); n > 0; n--) {
      const tail = this.text.slice(end - n, end)
      if (this.stops.some(stop => stop.startsWith(tail))) return n
    }
    return 0
  }
}
