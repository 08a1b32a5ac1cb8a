/**
 * The optional-peer loader moved to `core/optional-peer.ts`, where stores and adapters both reach it
 * without one importing the other. This name stays only until `adapters/fastify.ts` imports it there.
 */
export { requireDriver } from '../core/optional-peer.js'
