/**
 * The demo's metrics: what latchkey counts through the OpenTelemetry metrics API, read back through
 * the OpenTelemetry SDK (`@opentelemetry/sdk-metrics`, a dev dependency of the repository). The demo's
 * manager is given {@link DemoMetrics.meter}, a `Meter` of an SDK `MeterProvider` of its own, and
 * `/metrics` shows what a reader of that provider collects: the numbers are the SDK's, never counted
 * by the demo. An app would rather register its provider globally (`metrics.setGlobalMeterProvider`)
 * before creating the manager, which then finds it (docs/metrics.md); the demo hands its meter to its
 * manager instead, so that every demo a test starts in one process counts on its own.
 */
import type { DataPoint, Histogram } from '@opentelemetry/sdk-metrics'
import { DataPointType, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'

/** A reader that collects when asked (`/metrics` asks on every render), exporting nowhere. */
class OnDemandReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** One data point of one instrument, as the SDK collected it. */
export interface MetricPoint {
  /** The instrument, e.g. `latchkey.csrf.refusals`. */
  readonly name: string
  /** Its attributes, `name=value` sorted and joined with `, `; `''` when it has none. */
  readonly attributes: string
  /** A counter's sum; a histogram's count of measurements. */
  readonly value: number
  /** A histogram's mean (its unit: ms); `null` for a counter. */
  readonly mean: number | null
}

/** The instruments latchkey makes (src/core/metrics.ts), in the order `/metrics` shows them. */
export const INSTRUMENTS: readonly { readonly name: string; readonly counts: string }[] = [
  {
    name: 'latchkey.session.loads',
    counts:
      'sessions loaded, by outcome: live (the cookie named a live session), anonymous (no cookie), rejected (a cookie that named none)',
  },
  {
    name: 'latchkey.session.commits',
    counts: 'sessions committed, by path: sync (the fast path), async, abandoned (a failed request)',
  },
  {
    name: 'latchkey.session.events',
    counts:
      'lifecycle events: created, login, renewed, regenerated; the ends (destroyed: a sign-out; revoked; expired); rejected cookies, by reason; dropped',
  },
  { name: 'latchkey.csrf.refusals', counts: 'requests the CSRF check refused, by reason' },
  { name: 'latchkey.store.conflicts', counts: 'compare-and-set writes that lost to another writer' },
  { name: 'latchkey.store.retries', counts: 'writes tried again after a conflict' },
  {
    name: 'latchkey.store.duration',
    counts: 'store calls, by operation and outcome: how many, and their mean duration',
  },
]

/** The lifecycle events that end a session. */
export const END_EVENTS: ReadonlySet<string> = new Set(['destroyed', 'revoked', 'expired'])

function attributesOf(point: DataPoint<unknown>): string {
  return Object.entries(point.attributes)
    .map(([name, value]) => `${name}=${String(value)}`)
    .sort()
    .join(', ')
}

/** An SDK `MeterProvider` of the demo's own, with a reader `/metrics` collects from. */
export class DemoMetrics {
  private readonly reader = new OnDemandReader()
  private readonly provider = new MeterProvider({ readers: [this.reader] })
  /** The meter the demo's manager records into (its `metrics` option). */
  readonly meter = this.provider.getMeter('latchkey')

  /** Every data point recorded so far (cumulative), in the order of {@link INSTRUMENTS}. */
  async read(): Promise<MetricPoint[]> {
    const { resourceMetrics } = await this.reader.collect()
    const points: MetricPoint[] = []
    for (const scope of resourceMetrics.scopeMetrics) {
      for (const metric of scope.metrics) {
        for (const point of metric.dataPoints as DataPoint<unknown>[]) {
          const name = metric.descriptor.name
          const attributes = attributesOf(point)
          if (metric.dataPointType === DataPointType.HISTOGRAM) {
            const { count, sum = 0 } = point.value as Histogram
            points.push({ name, attributes, value: count, mean: count === 0 ? null : sum / count })
          } else {
            points.push({ name, attributes, value: point.value as number, mean: null })
          }
        }
      }
    }
    const order = (name: string) => INSTRUMENTS.findIndex((instrument) => instrument.name === name)
    return points.sort((a, b) => order(a.name) - order(b.name) || (a.attributes < b.attributes ? -1 : 1))
  }

  /** Stops the provider. */
  async close(): Promise<void> {
    await this.provider.shutdown()
  }
}

/** The sum of the points of instrument `name` whose attributes pass `match`. */
export function total(
  points: readonly MetricPoint[],
  name: string,
  match: (attributes: string) => boolean = () => true,
): number {
  return points
    .filter((point) => point.name === name && match(point.attributes))
    .reduce((sum, point) => sum + point.value, 0)
}

/** Whether a `latchkey.session.events` point's attributes name an end (destroyed, revoked, expired). */
export function isEnd(attributes: string): boolean {
  const event = /(?:^|, )event=([^,]*)/.exec(attributes)?.[1]
  return event !== undefined && END_EVENTS.has(event)
}
