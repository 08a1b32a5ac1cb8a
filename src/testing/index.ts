/**
 * `latchkey/testing`: the store conformance suite for bundled and third-party stores, and the
 * manual clock it drives expiry with.
 */
export { ManualClock } from '../core/clock.js'
export {
  type ConformanceRunner,
  type ConformanceTestFunction,
  defineStoreConformance,
  makeRecord,
  type RecoveringStore,
  randomStoreKey,
  type StoreConformanceOptions,
  type StoreScenario,
  storeScenarios,
} from './conformance.js'
