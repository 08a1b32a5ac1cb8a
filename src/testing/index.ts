/**
 * `latchkey/testing`: the store conformance suite for bundled and third-party stores, the adapter
 * conformance suite for front doors (node:http, Express, Fastify, Hono, Koa, or your own), and the
 * manual clock they drive expiry with.
 */
export { ManualClock } from '../core/clock.js'
export {
  type AdapterConformanceOptions,
  type AdapterScenario,
  adapterScenarios,
  type ConformanceAdapterOptions,
  type ConformanceApp,
  type ConformanceData,
  type ConformanceReply,
  type ConformanceRequest,
  defineAdapterConformance,
  type NodeResponseEvents,
  type ServedConformanceApp,
} from './adapter-conformance.js'
export {
  type ConformanceRunner,
  type ConformanceTestFunction,
  defineStoreConformance,
  makeRecord,
  noticeScenarios,
  type RecoveringStore,
  randomStoreKey,
  type StoreConformanceOptions,
  type StoreScenario,
  storeScenarios,
} from './conformance.js'
