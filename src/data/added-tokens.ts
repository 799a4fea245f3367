import { readFile } from 'node:fs/promises'
import { isObject } from './json-values.js'

/** An entry of tokenizer.json's `added_tokens`. */
export interface AddedToken {
  id: number
  content: string
  special: boolean
  /** True when the tokenizer matches it in a plain, position-free way (no strip, no word rule, not normalized). */
  plain: boolean
}

export interface AddedTokensInfo {
  tokens: AddedToken[]
  hasNormalizer: boolean
}

/**
 * Reads `added_tokens` (and whether there is a normalizer) from tokenizer.json without parsing
 * the whole file: the vocabulary and merges would cost ~60 MB of heap for Llama 3's 9 MB file.
 */
export async function readAddedTokens (tokenizerPath: string): Promise<AddedTokensInfo> {
  const text = await readFile(tokenizerPath, 'utf8')
  const key = text.indexOf('"added_tokens"')
  const start = key === -1 ? -1 : text.indexOf('[', key)
  const end = start === -1 ? -1 : matchingBracket(text, start)
  if (end === -1) return { tokens: [], hasNormalizer: true }
  const raw = JSON.parse(text.slice(start, end + 1)) as unknown[]
  const tokens = raw.filter(isObject).flatMap((entry): AddedToken[] => {
    if (typeof entry.id !== 'number' || typeof entry.content !== 'string') return []
    const plain = entry.lstrip !== true && entry.rstrip !== true && entry.single_word !== true
    return [{
      id: entry.id,
      content: entry.content,
      special: entry.special === true,
      plain: plain && entry.normalized !== true,
    }]
  })
  // serde writes the top-level keys in a fixed order: "normalizer" follows "added_tokens".
  const normalizer = /"normalizer"\s*:\s*(null)?/.exec(text.slice(end, end + 4096))
  return { tokens, hasNormalizer: normalizer === null || normalizer[1] === undefined }
}

function matchingBracket (text: string, open: number): number {
  let depth = 0
  let inString = false
  for (let i = open; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++ // backslash: skip the escaped character
      else if (c === 0x22) inString = false
    } else if (c === 0x22) {
      inString = true
    } else if (c === 0x5b) {
      depth++
    } else if (c === 0x5d && --depth === 0) {
      return i
    }
  }
  return -1
}

/**
 * Finds added tokens in text the way the tokenizer does: leftmost, then longest. Most models' added
 * tokens share a prefix (`<|`), so the scan is one `indexOf` per candidate.
 */
export class AddedTokenMatcher {
  private readonly set: Set<string>
  private readonly lengths: number[]
  private readonly prefix: string
  private readonly firstChars: Set<string>

  constructor (tokens: readonly string[]) {
    this.set = new Set(tokens.filter((token) => token.length > 0))
    this.lengths = [...new Set([...this.set].map((token) => token.length))].sort((a, b) => b - a)
    this.prefix = commonPrefix([...this.set])
    this.firstChars = new Set([...this.set].map((token) => token[0] as string))
  }

  get size (): number {
    return this.set.size
  }

  /** The leftmost-longest added token at or after `from`, or null. */
  find (text: string, from = 0): { index: number, token: string } | null {
    if (this.set.size === 0) return null
    if (this.prefix.length > 0) {
      for (let i = text.indexOf(this.prefix, from); i !== -1; i = text.indexOf(this.prefix, i + 1)) {
        const token = this.at(text, i)
        if (token !== null) return { index: i, token }
      }
      return null
    }
    for (let i = from; i < text.length; i++) {
      if (!this.firstChars.has(text[i] as string)) continue
      const token = this.at(text, i)
      if (token !== null) return { index: i, token }
    }
    return null
  }

  private at (text: string, index: number): string | null {
    for (const length of this.lengths) {
      const candidate = text.substr(index, length)
      if (this.set.has(candidate)) return candidate
    }
    return null
  }
}

function commonPrefix (strings: readonly string[]): string {
  let prefix = strings[0] ?? ''
  for (const s of strings) {
    while (!s.startsWith(prefix)) prefix = prefix.slice(0, -1)
  }
  return prefix
}
