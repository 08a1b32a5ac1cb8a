/**
 * The Lua scripts of {@link RedisStore}. Each one names exactly one key (`KEYS[1]`), so it runs on one
 * slot of a Redis Cluster, and decides expiry with the `now` the store passes in (its `Clock`), never
 * with Redis's own time: Redis's TTL only frees memory, some time after the store's deadline.
 *
 * A session hash holds: `v` version, `u` user ID (absent for an anonymous session), `c` createdAt,
 * `l` lastSeenAt, `i` idleExpiresAt, `a` absoluteExpiresAt, `p` payload; a tombstone has `t` = `1`,
 * keeps `v`, `c`, `l`, `i`, `a` and has neither `p` nor `u`. Numbers are written as the decimal strings
 * the store passes in (Lua never formats them back, so no precision is lost).
 *
 * A user index is a sorted set: member the session's store key, score an upper bound of that record's
 * `absoluteExpiresAt` (see `redis-store.ts` for why that keeps it correct across slots).
 */
import { createHash } from 'node:crypto'

/** A script and its SHA-1, for `EVALSHA`. */
export interface LuaScript {
  readonly source: string
  readonly sha: string
}

function script(body: string): LuaScript {
  const source = `${PRELUDE}\n${body.trim()}\n`
  return Object.freeze({ source, sha: createHash('sha1').update(source).digest('hex') })
}

/**
 * `deadline(i, a)`: the record's expiry, or nil for a hash that is not a record (foreign or torn).
 * `expire(key, deadline, now, skew)`: Redis frees the key `skew` ms after the deadline, counted from now
 * on Redis's own clock (relative, so a store clock far from Redis's, as in tests, changes nothing).
 */
const PRELUDE = `
local function deadline(i, a)
  i = tonumber(i)
  a = tonumber(a)
  if i == nil or a == nil then return nil end
  return math.min(i, a)
end
local function expire(key, at, now, skew)
  local ttl = at - now
  if ttl < 0 then ttl = 0 end
  ttl = math.floor(ttl + skew)
  if ttl < 1 then ttl = 1 end
  redis.call('PEXPIRE', key, string.format('%d', ttl))
end
`.trim()

/**
 * create: writes the record unless a live record or live tombstone holds the key.
 * ARGV: now, skew, v, c, l, i, a, p, hasUser ('0'|'1'), userId. Returns 1 (written) or 0.
 */
export const CREATE = script(`
local now = tonumber(ARGV[1])
local old = redis.call('HMGET', KEYS[1], 'i', 'a')
local until_ = deadline(old[1], old[2])
if until_ ~= nil and now < until_ then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'c', ARGV[4], 'l', ARGV[5], 'i', ARGV[6], 'a', ARGV[7], 'p', ARGV[8])
if ARGV[9] == '1' then redis.call('HSET', KEYS[1], 'u', ARGV[10]) end
expire(KEYS[1], math.min(tonumber(ARGV[6]), tonumber(ARGV[7])), now, tonumber(ARGV[2]))
return 1
`)

/**
 * update: compare-and-set on the version of a live, non-tombstoned record.
 * ARGV: now, skew, expectedVersion, indexed ('0'|'1'), v, c, l, i, a, p, hasUser, userId.
 * Returns 1 (written), 0 (no live record with that version) or -1: the record would become visible
 * under a user whose index may not cover it yet (another user, or a later absolute deadline), and
 * `indexed` is '0'; the store then adds it to that user's index and calls again with `indexed` '1'.
 */
export const UPDATE = script(`
local now = tonumber(ARGV[1])
local old = redis.call('HMGET', KEYS[1], 'v', 'i', 'a', 't', 'u')
local until_ = deadline(old[2], old[3])
if old[4] or until_ == nil or now >= until_ or old[1] ~= ARGV[3] then return 0 end
if ARGV[11] == '1' and ARGV[4] ~= '1' and (old[5] ~= ARGV[12] or tonumber(old[3]) < tonumber(ARGV[9])) then
  return -1
end
redis.call('HSET', KEYS[1], 'v', ARGV[5], 'c', ARGV[6], 'l', ARGV[7], 'i', ARGV[8], 'a', ARGV[9], 'p', ARGV[10])
if ARGV[11] == '1' then
  redis.call('HSET', KEYS[1], 'u', ARGV[12])
else
  redis.call('HDEL', KEYS[1], 'u')
end
expire(KEYS[1], math.min(tonumber(ARGV[8]), tonumber(ARGV[9])), now, tonumber(ARGV[2]))
return 1
`)

/**
 * touch: moves `l` and `i` of a live, non-tombstoned record, and its TTL with them.
 * ARGV: now, skew, lastSeenAt, idleExpiresAt. Returns 1 (touched) or 0.
 */
export const TOUCH = script(`
local now = tonumber(ARGV[1])
local old = redis.call('HMGET', KEYS[1], 'i', 'a', 't')
local until_ = deadline(old[1], old[2])
if old[3] or until_ == nil or now >= until_ then return 0 end
redis.call('HSET', KEYS[1], 'l', ARGV[3], 'i', ARGV[4])
expire(KEYS[1], math.min(tonumber(ARGV[4]), tonumber(old[2])), now, tonumber(ARGV[2]))
return 1
`)

/**
 * destroy: turns a live record into a tombstone (payload and user dropped, deadlines and TTL kept).
 * ARGV: now. Returns 0 (nothing destroyed) or {absoluteExpiresAt, userId or nil}.
 */
export const DESTROY = script(`
local now = tonumber(ARGV[1])
local old = redis.call('HMGET', KEYS[1], 'i', 'a', 't', 'u')
local until_ = deadline(old[1], old[2])
if old[3] or until_ == nil or now >= until_ then return 0 end
redis.call('HDEL', KEYS[1], 'p', 'u')
redis.call('HSET', KEYS[1], 't', '1')
return {old[2], old[4]}
`)

/**
 * prune, per record: deletes the hash if its expiry has passed (a record or a tombstone).
 * ARGV: now. Returns 1 (deleted) or 0.
 */
export const PRUNE = script(`
local old = redis.call('HMGET', KEYS[1], 'i', 'a')
local until_ = deadline(old[1], old[2])
if until_ == nil or tonumber(ARGV[1]) < until_ then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)

/**
 * Adds a store key to a user index, or raises its score (`ZADD GT`), after dropping the members whose
 * score is at or below the cutoff; keeps the set's TTL at least as long as its newest member needs.
 * ARGV: now, skew, score, member. Returns 1.
 */
export const INDEX_ADD = script(`
local now = tonumber(ARGV[1])
local skew = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - skew))
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[4])
local ttl = tonumber(ARGV[3]) - now
if ttl < 0 then ttl = 0 end
ttl = math.floor(ttl + skew)
if ttl < 1 then ttl = 1 end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl)) end
return 1
`)

/**
 * The members of a user index that may still be live: drops those at or below the cutoff (dead for
 * every clock within the skew), returns the others above `now` as a flat {member, score, ...} list.
 * ARGV: cutoff, now.
 */
export const INDEX_LIST = script(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'WITHSCORES')
`)

/**
 * Removes members of a user index whose score is at most the given bound (the absolute deadline of the
 * tombstoned or expired record they pointed at): a member re-added for a newer record has a higher score
 * and stays. ARGV: member, bound, member, bound, ... Returns how many were removed.
 */
export const INDEX_REMOVE = script(`
local removed = 0
for j = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[j])
  if score and tonumber(score) <= tonumber(ARGV[j + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[j])
  end
end
return removed
`)
