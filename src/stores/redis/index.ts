/** `latchkey/stores/redis`: sessions in Redis or Redis Cluster, through node-redis 5. */
export {
  type RedisClientLike,
  type RedisClusterLike,
  type RedisCommandOptions,
  type RedisMigrationReport,
  RedisStore,
  type RedisStoreOptions,
} from './redis-store.js'
