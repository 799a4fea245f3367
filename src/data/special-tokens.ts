/**
 * Finds special-token strings (`<|eot_id|>`, `<|im_end|>` …) inside user text. In a chat they would
 * be tokenized as control tokens — a turn could end inside a message — so chat contents may not
 * hold them. Built for speed: most models' special tokens share a prefix (`<|`), so a text without
 * that prefix is cleared with one `indexOf`.
 */
export function makeSpecialTokenFinder (tokens: readonly string[]): (text: string) => string | null {
  const set = new Set(tokens.filter((token) => token.length > 0))
  if (set.size === 0) return () => null
  const lengths = [...new Set([...set].map((token) => token.length))].sort((a, b) => b - a)
  const prefix = commonPrefix([...set])
  const at = (text: string, index: number): string | null => {
    for (const length of lengths) {
      const candidate = text.substr(index, length)
      if (set.has(candidate)) return candidate
    }
    return null
  }
  if (prefix.length === 0) {
    return (text) => {
      for (let i = 0; i < text.length; i++) {
        const found = at(text, i)
        if (found !== null) return found
      }
      return null
    }
  }
  return (text) => {
    for (let i = text.indexOf(prefix); i !== -1; i = text.indexOf(prefix, i + 1)) {
      const found = at(text, i)
      if (found !== null) return found
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
