/**
 * Whether a folder of `FileStore` can be trusted, and how FileStore makes its own: as ssh does with its
 * own files, a folder must belong to this process's user and be writable by nobody else. Another user
 * who can write into the session folder can move a session file aside before a logout and back after
 * it, and the logged-out cookie works again; a folder FileStore makes is therefore 0700 whatever the
 * umask. Skipped where the platform has no user IDs (Windows).
 */
import type { Stats } from 'node:fs'
import { chmod, mkdir } from 'node:fs/promises'

/** Mode of every folder FileStore makes. */
const FOLDER_MODE = 0o700
/** Write permission for the group and for others. */
const WRITABLE_BY_OTHERS = 0o022

/** Why the folder at `path` (described by `stats`) cannot be trusted, and the fix; `null` when it can. */
export function distrust(path: string, stats: Stats): string | null {
  const uid = process.geteuid?.()
  if (uid === undefined) return null
  const risk = 'who could move session files aside and back (bringing logged-out sessions back)'
  if (stats.uid !== uid) {
    return (
      `${path} belongs to uid ${stats.uid}, not to this process's user (uid ${uid}), ${risk}: ` +
      `run "chown -R ${uid} ${path}" and "chmod 700 ${path}", or use a folder of this user's own`
    )
  }
  if ((stats.mode & WRITABLE_BY_OTHERS) !== 0) {
    const who = [stats.mode & 0o020 ? 'its group' : '', stats.mode & 0o002 ? 'others' : '']
    const mode = (stats.mode & 0o7777).toString(8).padStart(4, '0')
    return (
      `${path} is writable by ${who.filter(Boolean).join(' and ')} (mode ${mode}), ${risk}: ` +
      `run "chmod 700 ${path}"`
    )
  }
  return null
}

/** Makes the folder `path` with mode 0700, whatever the umask. Rejects as `mkdir` does (`EEXIST`, `ENOENT`). */
export async function makeFolder(path: string): Promise<void> {
  await mkdir(path, { mode: FOLDER_MODE })
  // The umask can only take bits away from 0700 (the folder is never open to others meanwhile).
  await chmod(path, FOLDER_MODE)
}
