/** A problem found in a dataset file. `line` is 1-based; `null` for problems of the whole file. */
export interface DatasetProblem {
  line: number | null
  message: string
  /** Path of the offending field inside the line, e.g. `messages[2].content`. */
  param?: string
}

export const MAX_PROBLEMS_KEPT = 10

/**
 * Keeps the first few problems and counts the rest, so that validating a file with millions of bad
 * lines stays in bounded memory while the report still says how many there were.
 */
export class ProblemCollector {
  readonly kept: DatasetProblem[] = []
  total = 0

  constructor (private readonly keep = MAX_PROBLEMS_KEPT) {}

  add (line: number | null, message: string, param?: string): void {
    this.total++
    if (this.kept.length < this.keep) {
      this.kept.push(param === undefined ? { line, message } : { line, message, param })
    }
  }

  get empty (): boolean {
    return this.total === 0
  }
}

/** Thrown by validators; carries the field path so the report can name it. */
export class ExampleError extends Error {
  constructor (message: string, readonly param?: string) {
    super(message)
    this.name = 'ExampleError'
  }
}

export function describeProblem (problem: DatasetProblem): string {
  return problem.line === null ? problem.message : `line ${problem.line}: ${problem.message}`
}

/**
 * The message a failed job carries in `error.message`: up to `maxShown` problems, one per line,
 * then how many were left out.
 */
export function formatProblems (
  result: { problems: readonly DatasetProblem[], totalProblems: number },
  maxShown = MAX_PROBLEMS_KEPT
): string {
  const shown = result.problems.slice(0, maxShown)
  const noun = result.totalProblems === 1 ? 'problem' : 'problems'
  const lines = [`The file has ${result.totalProblems} ${noun}:`, ...shown.map(describeProblem)]
  const more = result.totalProblems - shown.length
  if (more > 0) lines.push(`and ${more} more`)
  return lines.join('\n')
}

/** The model folder cannot be used (no tokenizer, unreadable config). The runner maps it to `invalid_model`. */
export class ModelFolderError extends Error {
  readonly code = 'invalid_model'
  constructor (message: string) {
    super(message)
    this.name = 'ModelFolderError'
  }
}
