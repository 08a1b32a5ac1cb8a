// The part of autocannon 9's API the benchmark uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  namespace autocannon {
    /** hdr-histogram-percentiles-obj summary. Latencies in ms, requests per second sample. */
    interface Histogram {
      readonly average: number
      readonly mean: number
      readonly stddev: number
      readonly min: number
      readonly max: number
      readonly p50: number
      readonly p90: number
      readonly p97_5: number
      readonly p99: number
      readonly p99_9: number
      /** For `requests`: the number of completed requests. */
      readonly total: number
    }

    interface Result {
      readonly requests: Histogram
      readonly latency: Histogram
      readonly duration: number
      readonly errors: number
      readonly timeouts: number
      readonly non2xx: number
      readonly '2xx': number
      readonly statusCodeStats: Record<string, { count: number }>
    }

    interface Client extends EventEmitter {
      setHeaders(headers: Record<string, string> | undefined): void
    }

    interface Options {
      url: string
      connections?: number
      duration?: number
      pipelining?: number
      timeout?: number
      headers?: Record<string, string>
      setupClient?: (client: Client) => void
    }

    interface Instance extends EventEmitter, PromiseLike<Result> {}
  }

  function autocannon(options: autocannon.Options): autocannon.Instance

  export = autocannon
}
