// Streamed job events (GET …/events?stream=true): server-sent events, each `id: <event id>` and
// `data: <the event as the list returns it>`, then `data: [DONE]` once the job has ended.
//
// One feed per watched job per process reads the job's new events once and hands them, already
// serialized, to every client watching it. A feed reads when woken: by a NOTIFY on PostgreSQL (any
// process's append, at its commit), by this process's own appends on SQLite, and by a poll (SQLite:
// other processes' appends; PostgreSQL: a safety net for a lost listening connection). A client
// first catches up from its Last-Event-ID on its own, at its own pace, then takes the feed's events;
// `seq` (the insertion order) says which ones it already has, so none is sent twice or skipped.
// Writing never waits for a client: one whose unread bytes pass the bound is cut off, and resumes by
// reconnecting with Last-Event-ID.
import type { FastifyBaseLogger, FastifyReply } from 'fastify'
import type { Kysely } from 'kysely'
import pg from 'pg'
import type { Config } from '../config.js'
import type { Dialect } from '../db/connect.js'
import type { Database } from '../db/database.js'
import { formatEvent, openEventStream, type EventStream } from '../http/sse.js'
import { EVENTS_CHANNEL, eventRowToApi, eventsAfterSeq, lastEventSeq, localAppends } from './events.store.js'
import { isTerminal } from './jobs.schemas.js'
import { getJobById, type JobRow } from './jobs.store.js'

export interface EventStreamSettings {
  pollMs: number // how often a feed looks without being woken
  pingMs: number // `: ping` comment on an open stream
  maxBufferBytes: number // a client's unread bytes beyond this: it is cut off
}

interface Item { seq: number, text: string }

interface Watcher {
  deliver: (items: Item[]) => void
  done: () => void
}

const PAGE = 200
const ENDING_POLL_MS = 250 // a job that ended but whose runner still holds it: its last event is near

/** Ended: a final status, and no runner (left) holding it — a cancelled job's runner still writes
 *  its last event, and lets go after it; every other end writes its events with the status. */
export function jobEnded (job: Pick<JobRow, 'status' | 'locked_by' | 'locked_until'>, now = Date.now()): boolean {
  return isTerminal(job.status) && (job.locked_by === null || (job.locked_until ?? 0) < now)
}

class JobFeed {
  readonly watchers = new Set<Watcher>()
  #cursor = -1 // the last seq handed out; -1 until the feed has started
  #running = false
  #again = false
  #closed = false
  #timer: NodeJS.Timeout | undefined

  constructor (private readonly hub: EventHub, private readonly jobId: string) {}

  async start (): Promise<void> {
    try {
      await this.hub.listening()
      this.#cursor = await lastEventSeq(this.hub.db, this.jobId)
    } catch (err) {
      this.hub.log.warn({ err, jobId: this.jobId }, 'event feed could not start')
      this.#cursor = -1
      this.#schedule(this.hub.settings.pollMs, true)
      return
    }
    this.wake()
  }

  wake (): void {
    if (this.#closed || this.#cursor < 0) return
    if (this.#running) { this.#again = true; return }
    this.#running = true
    void this.#cycle().finally(() => { this.#running = false })
  }

  close (): void {
    this.#closed = true
    clearTimeout(this.#timer)
  }

  async #cycle (): Promise<void> {
    let next = this.hub.settings.pollMs
    try {
      do {
        this.#again = false
        // the job first: when it has ended, every event it will have is already there to read
        const job = await getJobById(this.hub.db, this.jobId)
        for (;;) {
          const rows = await eventsAfterSeq(this.hub.db, this.jobId, this.#cursor, PAGE)
          if (rows.length === 0) break
          this.#cursor = rows.at(-1)!.seq
          const items = rows.map(r => ({ seq: r.seq, text: formatEvent(eventRowToApi(r), r.id) }))
          for (const w of this.watchers) w.deliver(items)
          if (rows.length < PAGE) break
        }
        if (!job || jobEnded(job)) {
          this.hub.ended(this.jobId, this)
          for (const w of this.watchers) w.done()
          return
        }
        if (isTerminal(job.status)) next = Math.min(next, ENDING_POLL_MS)
      } while (this.#again && !this.#closed)
    } catch (err) {
      this.hub.log.warn({ err, jobId: this.jobId }, 'event feed read failed')
    }
    this.#schedule(next)
  }

  #schedule (ms: number, restart = false): void {
    if (this.#closed) return
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => { if (restart) void this.start(); else this.wake() }, ms)
  }
}

/** Per process (per app): the feeds of the jobs being watched, and on PostgreSQL the LISTEN connection. */
export class EventHub {
  readonly settings: EventStreamSettings
  readonly #feeds = new Map<string, JobFeed>()
  readonly #streams = new Set<EventStream>()
  readonly #onAppend = (jobId: string) => { this.#feeds.get(jobId)?.wake() }
  #listener: Promise<pg.Client> | null = null
  #closed = false

  constructor (
    readonly db: Kysely<Database>,
    private readonly dialect: Dialect,
    private readonly config: Pick<Config, 'databaseUrl' | 'eventStream'>,
    readonly log: FastifyBaseLogger
  ) {
    const { pollMs, pgPollMs, pingMs, maxBufferBytes } = config.eventStream
    this.settings = { pollMs: dialect === 'postgres' ? pgPollMs : pollMs, pingMs, maxBufferBytes }
    if (dialect === 'sqlite') localAppends.on('appended', this.#onAppend)
  }

  /** Resolves once this process hears every NOTIFY (at once on SQLite); a failure is retried by the caller. */
  async listening (): Promise<void> {
    if (this.dialect !== 'postgres' || !this.config.databaseUrl) return
    this.#listener ??= this.#listen(this.config.databaseUrl)
    await this.#listener
  }

  async #listen (url: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: url })
    const lost = (err?: unknown) => {
      if (this.#listener === null) return
      this.#listener = null
      client.removeAllListeners()
      client.on('error', () => {})
      void client.end().catch(() => {})
      if (this.#closed) return
      this.log.warn({ err }, 'event stream: the LISTEN connection was lost; reconnecting')
      // what was notified meanwhile is read when the feeds restart on the new connection
      setTimeout(() => { void this.#relisten() }, 500).unref()
    }
    client.on('error', lost)
    client.on('end', () => { lost() })
    client.on('notification', (msg) => {
      if (msg.channel === EVENTS_CHANNEL && msg.payload) this.#feeds.get(msg.payload)?.wake()
    })
    try {
      await client.connect()
      await client.query(`LISTEN ${EVENTS_CHANNEL}`)
    } catch (err) {
      this.#listener = null
      client.removeAllListeners()
      client.on('error', () => {})
      void client.end().catch(() => {})
      throw err
    }
    return client
  }

  async #relisten (): Promise<void> {
    if (this.#closed || this.#feeds.size === 0) return
    try {
      await this.listening()
      for (const feed of this.#feeds.values()) feed.wake()
    } catch (err) {
      this.log.warn({ err }, 'event stream: LISTEN failed; feeds poll meanwhile')
      setTimeout(() => { void this.#relisten() }, 2000).unref()
    }
  }

  watch (jobId: string, watcher: Watcher): () => void {
    let feed = this.#feeds.get(jobId)
    if (!feed) {
      feed = new JobFeed(this, jobId)
      this.#feeds.set(jobId, feed)
      void feed.start()
    }
    feed.watchers.add(watcher)
    const mine = feed
    return () => {
      mine.watchers.delete(watcher)
      if (mine.watchers.size === 0) this.ended(jobId, mine)
    }
  }

  /** The feed is done (job ended, or nobody watches): the next watcher starts a new one. */
  ended (jobId: string, feed: JobFeed): void {
    feed.close()
    if (this.#feeds.get(jobId) === feed) this.#feeds.delete(jobId)
  }

  /** Streams the job's events after `fromSeq` to this client until the job ends or the client goes. */
  stream (reply: FastifyReply, jobId: string, fromSeq: number): void {
    const out = openEventStream(reply)
    if (this.#closed) { out.close('end'); return } // shutting down: come back later
    this.#streams.add(out)
    const { maxBufferBytes, pingMs } = this.settings
    let seq = fromSeq
    let catchingUp = true
    let doneSeen = false
    let pending: Item[] = []
    let pendingBytes = 0
    let finished = false
    const finish = (how: 'done' | 'drop' | 'gone') => {
      if (finished) return
      finished = true
      clearInterval(ping)
      unwatch()
      this.#streams.delete(out)
      if (how === 'done') out.end()
      if (how === 'drop') {
        reply.log.info({ jobId, buffered: out.buffered() }, 'event stream client too slow: disconnected')
        out.close('destroy')
      }
    }
    const write = (item: Item) => {
      if (item.seq <= seq) return
      out.sendFormatted(item.text)
      seq = item.seq
    }
    const unwatch = this.watch(jobId, {
      deliver: (items) => {
        if (finished) return
        if (catchingUp) {
          pending.push(...items)
          for (const i of items) pendingBytes += i.text.length
          if (pendingBytes > maxBufferBytes) finish('drop')
          return
        }
        for (const item of items) write(item)
        if (out.buffered() > maxBufferBytes) finish('drop')
      },
      done: () => {
        if (catchingUp) doneSeen = true
        else finish('done')
      },
    })
    const ping = setInterval(() => { out.comment('ping') }, pingMs)
    reply.raw.on('close', () => { finish('gone') })
    void (async () => {
      // the replay, at the client's pace (the drain): a long history is not a slow client
      for (;;) {
        const rows = await eventsAfterSeq(this.db, jobId, seq, PAGE)
        for (const r of rows) {
          if (finished) return
          out.send(eventRowToApi(r), r.id)
          seq = r.seq
        }
        if (out.buffered() > 0) await out.drained()
        if (finished) return
        if (rows.length < PAGE) break
      }
      catchingUp = false
      const held = pending
      pending = []
      pendingBytes = 0
      for (const item of held) write(item)
      if (doneSeen) finish('done')
      else if (out.buffered() > maxBufferBytes) finish('drop')
    })().catch((err: unknown) => {
      reply.log.warn({ err, jobId }, 'event stream replay failed')
      finish('gone')
      out.close('destroy')
    })
  }

  /** Shutdown: open streams end (clients reconnect elsewhere or later, with Last-Event-ID). */
  async close (): Promise<void> {
    this.#closed = true
    if (this.dialect === 'sqlite') localAppends.off('appended', this.#onAppend)
    for (const feed of this.#feeds.values()) feed.close()
    this.#feeds.clear()
    for (const out of this.#streams) out.close('end')
    this.#streams.clear()
    const listener = this.#listener
    this.#listener = null
    if (listener) await listener.then(c => c.end(), () => {})
  }
}
