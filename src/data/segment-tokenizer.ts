import type { Tokenizer } from 'tokenizers'
import { AddedTokenMatcher, type AddedTokensInfo } from './added-tokens.js'

/** A text seen this many times among the last SEEN_LIMIT pieces is cached (system prompts, template glue). */
const SEEN_LIMIT = 2048
const CACHE_LIMIT = 4096
const MAX_CACHED_CHARS = 4096
/** Pieces are joined into inputs of about this size: fewer, larger native calls, still many for all cores. */
const JOINED_INPUT_CHARS = 8192

const PROBES = ['Hello world', ' leading space', '\n\nnew lines\n', 'x', '  ', 'émoji 😀 ok']

interface Pending { text: string, ids: number[] | null }

/**
 * Tokenizes texts exactly as `encode(text, {addSpecialTokens: false})` would, but faster.
 *
 * Hugging Face tokenizers first cut the input at added tokens (`<|eot_id|>` …) and tokenize the
 * pieces in between independently. This class does that cut itself, which allows (1) caching the
 * pieces that repeat (a system prompt, the template's role names) and (2) joining many pieces into
 * one native call with an added token as separator, then splitting the ids at that token. Both are
 * exact only for tokenizers whose added tokens match plainly and whose pieces do not depend on
 * their position (Metaspace `prepend_scheme: first` does); `create` checks that with probes and
 * returns null otherwise.
 */
export class SegmentTokenizer {
  private cache = new Map<string, number[]>()
  private seen = new Map<string, number>()

  private constructor (
    private readonly tokenizer: Tokenizer,
    private readonly matcher: AddedTokenMatcher,
    private readonly idOf: ReadonlyMap<string, number>,
    private readonly separator: string,
    private readonly separatorId: number
  ) {}

  static async create (tokenizer: Tokenizer, added: AddedTokensInfo): Promise<SegmentTokenizer | null> {
    const tokens = added.tokens
    if (tokens.length === 0 || tokens.some((token) => !token.plain)) return null
    const separator = tokens.find((token) => token.special) ?? tokens[0]
    if (separator === undefined) return null
    const idOf = new Map(tokens.map((token) => [token.content, token.id]))
    const candidate = new SegmentTokenizer(
      tokenizer,
      new AddedTokenMatcher([...idOf.keys()]),
      idOf,
      separator.content,
      separator.id
    )
    return await candidate.isExact() ? candidate : null
  }

  private async isExact (): Promise<boolean> {
    const encode = async (text: string): Promise<number[]> =>
      (await this.tokenizer.encode(text, null, { addSpecialTokens: false })).getIds()
    const sep = this.separator
    for (const probe of PROBES) {
      const alone = await encode(probe)
      const expected = [...alone, this.separatorId, ...alone]
      if (!sameIds(await encode(probe + sep + probe), expected)) return false
      if (!sameIds(await encode(sep + probe), [this.separatorId, ...alone])) return false
    }
    return true
  }

  async encodeAll (texts: readonly string[]): Promise<number[][]> {
    const pending: Pending[] = []
    const parts = texts.map((text) => this.split(text, pending))
    await this.encodePending(pending)
    this.remember(pending)
    return parts.map((pieces) => {
      if (pieces.length === 1 && Array.isArray(pieces[0])) return pieces[0]
      const ids: number[] = []
      for (const piece of pieces) {
        if (typeof piece === 'number') ids.push(piece)
        else for (const id of Array.isArray(piece) ? piece : piece.ids as number[]) ids.push(id)
      }
      return ids
    })
  }

  /** Cuts at added tokens; each piece between them is cached ids or a pending text. */
  private split (text: string, pending: Pending[]): Array<number | number[] | Pending> {
    const pieces: Array<number | number[] | Pending> = []
    const plain = (piece: string): void => {
      const cached = this.cache.get(piece)
      if (cached !== undefined) {
        pieces.push(cached)
        return
      }
      const entry: Pending = { text: piece, ids: null }
      pending.push(entry)
      pieces.push(entry)
    }
    let at = 0
    for (let match = this.matcher.find(text, 0); match !== null; match = this.matcher.find(text, at)) {
      if (match.index > at) plain(text.slice(at, match.index))
      pieces.push(this.idOf.get(match.token) as number)
      at = match.index + match.token.length
    }
    if (at < text.length) plain(at === 0 ? text : text.slice(at))
    return pieces
  }

  private async encodePending (pending: Pending[]): Promise<void> {
    const inputs: string[] = []
    const groups: Pending[][] = []
    let group: Pending[] = []
    let chars = 0
    for (const entry of pending) {
      group.push(entry)
      chars += entry.text.length
      if (chars >= JOINED_INPUT_CHARS) {
        groups.push(group)
        group = []
        chars = 0
      }
    }
    if (group.length > 0) groups.push(group)
    for (const members of groups) inputs.push(members.map((entry) => entry.text).join(this.separator))
    if (inputs.length === 0) return
    const encodings = await this.tokenizer.encodeBatch(inputs, { addSpecialTokens: false })
    groups.forEach((members, g) => this.assignSplit((encodings[g] as { getIds: () => number[] }).getIds(), members))
  }

  private assignSplit (ids: number[], members: Pending[]): void {
    let start = 0
    let member = 0
    for (let i = 0; i <= ids.length; i++) {
      if (i < ids.length && ids[i] !== this.separatorId) continue
      const entry = members[member++]
      if (entry === undefined) throw new Error('segment tokenizer: more pieces than joined')
      entry.ids = ids.slice(start, i)
      start = i + 1
    }
    if (member !== members.length) throw new Error('segment tokenizer: fewer pieces than joined')
  }

  private remember (pending: Pending[]): void {
    for (const { text, ids } of pending) {
      if (text.length > MAX_CACHED_CHARS || ids === null) continue
      const count = (this.seen.get(text) ?? 0) + 1
      if (count < 2) {
        if (this.seen.size >= SEEN_LIMIT) this.seen = new Map()
        this.seen.set(text, count)
        continue
      }
      this.seen.delete(text)
      if (this.cache.size >= CACHE_LIMIT) this.cache = new Map()
      this.cache.set(text, ids)
    }
  }
}

function sameIds (a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i])
}
