/**
 * The per-key lock of `FileStore`: mutual exclusion between the processes sharing a session folder,
 * built only on what Linux does atomically, and never wedged by a process that died holding it.
 *
 * A lock is a directory `<key>.lock` holding one entry (an empty directory) whose name says who owns
 * it: `<token>.<pid>.<thread>.<machine>`, with a random token per acquisition and `machine` a hash of
 * the boot ID and PID namespace. Held means "exists and is not empty"; an empty or missing one is free.
 *
 * - Taking it: the taker builds `<key>.lock.<token>.new` with its owner entry inside, then renames it
 *   onto `<key>.lock`. rename(2) replaces a missing or empty directory atomically and refuses a
 *   non-empty one (`ENOTEMPTY`/`EEXIST`), so of any number of takers exactly one wins.
 * - Releasing it: the owner removes its own entry (the lock is then empty, hence free) and then the
 *   lock directory if it still is empty (`rmdir` never removes a non-empty one: a new owner's lock).
 * - Breaking it: a waiter removes the owner entry *by the name it judged stale*. That name carries the
 *   token, so a waiter can only ever remove the lock it looked at, never a fresh one another waiter
 *   took meanwhile. A lock is stale when its owner is a process of this machine and PID namespace that
 *   is gone (`kill(pid, 0)` says `ESRCH`), or this very thread, which no longer holds it (a release that
 *   failed); or when the waiter has seen the same owner hold it for `staleMs` (an owner on another
 *   machine, a reused PID, a stuck process).
 *
 * An owner checks its entry is still there right before it commits, so a lock broken under a live but
 * stuck owner costs that owner its write (it rejects) rather than letting two writes through.
 *
 * A lock no taker here can have made is foreign: a `<key>.lock` that is not a folder, or that another
 * user owns or may write to (see `ownership.ts`), or an entry in it that is not an empty owner folder (a
 * file, a folder with something in it, another name). It is never trusted as anyone's lock, and never
 * wedges the key: once a waiter has seen it for `staleMs` it is moved aside whole (to
 * `<key>.lock.<token>.stale`, which needs only the shard folder to be writable), removed if this user
 * may, and reported. Only the lock judged is moved (same inode, checked just before); a fresh lock taken
 * in the instant between that check and the rename would be moved too, and its owner, finding its entry
 * gone, loses its write: as with any broken lock, never two writes through.
 *
 * What it costs, and why it is not cheaper (issue 18). A lock makes or removes five directory entries:
 * `mkdir` of the staging folder and of the owner entry, the rename, and two `rmdir`s on release; on the
 * shared VM's ext4 each cost some 0.3 to 0.85 ms (an `fdatasync` of a small file: 1.7 ms; the stat of
 * `stillHeld`: 10 µs), so the lock is about half of a write's time. Fewer need another protocol:
 * - One `mkdir` of `<key>.lock` as the whole lock would leave it empty until the owner entry is made, and
 *   an empty lock is a free one here: a taker of 0.1.0, sharing the folder during a rolling upgrade, would
 *   rename its own lock over it and two writers would hold the key. Calling an empty lock held instead
 *   needs a way to break one whose owner died before naming itself (by age only), and both versions to
 *   agree: an on-disk format change, for two of the five entries.
 * - A symlink whose target names the owner is one entry to take and one to remove, but breaking it, and
 *   even releasing it, removes by path whatever is there by then (another taker's fresh lock), unless
 *   each is a rename aside, a read and a put-back: as many entries again.
 * So the protocol stays; the staging folder is no longer `chmod`ed (the umask can only take bits away
 * from 0700, and a lock's mode is never trusted beyond "not writable by others", which it cannot be).
 * `stillHeld` stays too: it is one stat, and it is what turns a lock broken under a stuck owner, or moved
 * aside with a foreign one, into a lost write instead of two writes through; skipping it while the lock
 * is young would rest on every process sharing the folder using the same `lockStaleMs`. What could be
 * cut around the lock was (FileStore): a create of a key with no file takes none (a hard link claims the
 * name), an update writes its temp file while the lock is being taken, and the lock is released before
 * the folder sync, not after it.
 */
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { chmod, lstat, mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { threadId } from 'node:worker_threads'
import { distrust } from './ownership.js'

/** How {@link takeLock} decides a lock is stale, and whom it tells about breaking one. */
export interface LockPolicy {
  /** A lock seen held by the same owner this long (ms) is broken; a waiter gives up after twice that. */
  readonly staleMs: number
  /** Called once for every lock broken, with what and why. */
  onBreak(message: string): void
}

/** A lock this thread holds. */
export interface HeldLock {
  /** True while its owner entry is still in place (nobody broke the lock). */
  stillHeld(): Promise<boolean>
  /** Frees the lock. Never rejects: a lock it fails to free is broken at once by the next taker here. */
  release(): Promise<void>
}

/** File-name suffix of a lock directory. */
export const LOCK_SUFFIX = '.lock'

const FIRST_POLL_MS = 1
const LAST_POLL_MS = 25
/** An owner entry: token, PID, thread ID, machine. */
const OWNER = /^([A-Za-z0-9_-]{22})\.(\d+)\.(\d+)\.([A-Za-z0-9_-]+)$/
/** The machine part of an owner entry when this machine cannot be told apart (not Linux). */
const UNKNOWN_MACHINE = 'unknown'

let thisMachine: string | undefined
/** Tokens of the locks this thread holds now. */
const heldHere = new Set<string>()

/** This process's boot ID and PID namespace, hashed: PIDs of owners are comparable only when it matches. */
function machine(): string {
  if (thisMachine === undefined) {
    try {
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
      const namespace = readlinkSync('/proc/self/ns/pid')
      thisMachine = createHash('sha256').update(`${boot}/${namespace}`).digest('base64url').slice(0, 16)
    } catch {
      thisMachine = UNKNOWN_MACHINE
    }
  }
  return thisMachine
}

/** Why the owner entry `name` is stale without waiting, or `null` when its owner may be alive. */
function gone(name: string): string | null {
  const match = OWNER.exec(name)
  if (!match || match[4] === UNKNOWN_MACHINE || match[4] !== machine()) return null
  const [token, pid, thread] = [match[1] as string, Number(match[2]), Number(match[3])]
  if (pid === process.pid) {
    return thread === threadId && !heldHere.has(token) ? 'this thread no longer holds it' : null
  }
  try {
    process.kill(pid, 0)
    return null
  } catch (error) {
    return errorCode(error) === 'ESRCH' ? 'that process is gone' : null
  }
}

function describe(name: string): string {
  const match = OWNER.exec(name)
  if (!match) return `an unknown owner (${name})`
  return `process ${match[2]} ${match[4] === machine() ? 'of this machine' : 'of another machine or PID namespace'}`
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code
}

/**
 * Takes the lock at `path` (`<dir>/<key>.lock`). With `wait`, polls until it is free or stale and
 * rejects after `2 * staleMs`; without, resolves `null` at once when an owner that may be alive holds
 * it (a lock whose owner is gone is still broken). Rejects when the folder fails (`ENOENT` when `dir`
 * is missing).
 */
export async function takeLock(path: string, policy: LockPolicy, wait: boolean): Promise<HeldLock | null> {
  const token = randomBytes(16).toString('base64url')
  const entry = `${token}.${process.pid}.${threadId}.${machine()}`
  const staging = `${path}.${token}.new`
  // 0700 less the umask, which can only take bits away: never open to others. No chmod (a metadata
  // write per lock) unless the umask took this user's own bits and the entry cannot be made.
  await mkdir(staging, { mode: 0o700 })
  let taken = false
  try {
    await mkdir(join(staging, entry), { mode: 0o700 }).catch(async (error: unknown) => {
      if (errorCode(error) !== 'EACCES') throw error
      await chmod(staging, 0o700)
      await mkdir(join(staging, entry), { mode: 0o700 })
    })
    const started = performance.now()
    let seen = { id: '', since: started }
    let pollMs = FIRST_POLL_MS
    for (;;) {
      try {
        await rename(staging, path)
        taken = true
        heldHere.add(token)
        return held(path, token, entry)
      } catch (error) {
        const code = errorCode(error)
        // ENOTDIR: something that is not a folder sits at `path`, a foreign lock.
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw error
      }
      const holder = await holderOf(path)
      if (holder === null) continue
      const now = performance.now()
      if (holder.id !== seen.id) seen = { id: holder.id, since: now }
      const why =
        (holder.foreign === undefined ? gone(holder.name) : null) ??
        (wait && now - seen.since >= policy.staleMs ? `held for over ${policy.staleMs} ms` : null)
      if (why) {
        const broke =
          holder.foreign === undefined
            ? await breakEntry(path, holder.name, token)
            : await moveAside(path, holder.ino, token)
        if (broke !== null)
          policy.onBreak(`broke the lock ${path} of ${describeHolder(holder)}: ${why}${broke}`)
        continue
      }
      if (!wait) return null
      if (now - started >= 2 * policy.staleMs) {
        throw new Error(
          `gave up after ${2 * policy.staleMs} ms waiting for the lock ${path} of ${describeHolder(holder)}`,
        )
      }
      await sleep(pollMs * (0.5 + Math.random()))
      pollMs = Math.min(LAST_POLL_MS, pollMs * 2)
    }
  } finally {
    if (!taken) await rm(staging, { recursive: true, force: true }).catch(() => {})
  }
}

/** Who holds a lock: `id` tells one holding apart from the next, `foreign` says why it is nobody's lock. */
type Holder =
  | { readonly id: string; readonly name: string; readonly foreign?: undefined }
  | { readonly id: string; readonly ino: number; readonly foreign: string }

/** The holder of the lock at `path`, or `null` when it is free. */
async function holderOf(path: string): Promise<Holder | null> {
  const stats = await lstat(path).catch(ignoreMissing)
  if (!stats) return null
  const untrusted = stats.isDirectory() ? distrust(path, stats) : 'it is not a folder'
  if (untrusted) return { id: `${stats.ino}`, ino: stats.ino, foreign: untrusted }
  const entries = await readdir(path, { withFileTypes: true }).catch(ignoreMissing)
  const first = entries?.[0]
  if (!first) return null
  if (OWNER.test(first.name) && first.isDirectory()) return { id: first.name, name: first.name }
  const foreign = `it holds ${first.isDirectory() ? 'a folder' : 'a file'} no lock owner made (${first.name})`
  return { id: `${stats.ino}/${first.name}`, ino: stats.ino, foreign }
}

function describeHolder(holder: Holder): string {
  return holder.foreign === undefined ? describe(holder.name) : `nobody (${holder.foreign})`
}

/**
 * Removes the owner entry judged stale (only that one: its name carries the token), then the lock if it
 * is empty. An entry that is not empty was never an owner's: the lock is moved aside instead. Resolves
 * what to add to the report ('' when nothing more happened), or `null` when nothing was broken.
 */
async function breakEntry(path: string, name: string, token: string): Promise<string | null> {
  try {
    await rmdir(join(path, name))
  } catch (error) {
    const code = errorCode(error)
    if (code === 'ENOTEMPTY' || code === 'EEXIST') {
      const stats = await lstat(path).catch(ignoreMissing)
      const moved = stats ? await moveAside(path, stats.ino, token) : null
      return moved === null ? null : `; its entry held something no lock owner puts there${moved}`
    }
    if (code !== 'ENOENT') throw error
  }
  await removeIfEmpty(path)
  return ''
}

/**
 * Moves the foreign lock at `path` aside, if it is still the one judged (same inode), and removes it if
 * this user may. Resolves what to add to the report, or `null` when another waiter already dealt with it.
 */
async function moveAside(path: string, ino: number, token: string): Promise<string | null> {
  const aside = `${path}.${token}.stale`
  if ((await lstat(path).catch(ignoreMissing))?.ino !== ino) return null
  try {
    await rename(path, aside)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return null
    throw error
  }
  try {
    await rm(aside, { recursive: true, force: true })
    return '; the lock was moved aside and removed'
  } catch (error) {
    const why = errorCode(error) ?? String(error)
    return `; the lock was moved aside to ${aside}, which this user cannot remove (${why}): remove it as its owner`
  }
}

function ignoreMissing(error: unknown): null {
  if (errorCode(error) === 'ENOENT') return null
  throw error
}

/** `rmdir`: removes an empty directory (a free lock, an owner entry) and leaves anything else alone. */
export async function removeIfEmpty(path: string): Promise<void> {
  try {
    await rmdir(path)
  } catch (error) {
    const code = errorCode(error)
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw error
  }
}

function held(path: string, token: string, entry: string): HeldLock {
  const mine = join(path, entry)
  return {
    stillHeld: () =>
      stat(mine).then(
        () => true,
        (error: unknown) => {
          if (errorCode(error) === 'ENOENT') return false
          throw error
        },
      ),
    release: async () => {
      heldHere.delete(token)
      await removeIfEmpty(mine).catch(() => {})
      await removeIfEmpty(path).catch(() => {})
    },
  }
}
