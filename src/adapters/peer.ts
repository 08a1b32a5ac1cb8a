/**
 * Optional peer dependencies of the adapters, loaded on first use instead of by a static import, so a
 * missing one is a {@link ConfigError} that names the package and the command that installs it, never
 * node's raw "module not found". Loaded once, synchronously (`require`), when the adapter's module is.
 */
import { createRequire } from 'node:module'
import { ConfigError } from '../core/errors.js'

const require = createRequire(import.meta.url)

/**
 * `require(name)`, resolved from latchkey's own location (as a static import would be). A missing
 * package throws `ConfigError('driver', '<user> needs the <name> package ...: npm install <name>')`; any
 * other failure of the module is rethrown as it is.
 *
 * @param name the package, e.g. `fastify-plugin`
 * @param user who needs it, for the message, e.g. `latchkey/fastify`
 */
export function requirePeer<T>(name: string, user: string): T {
  try {
    return require(name) as T
  } catch (error) {
    const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown }
    const missing =
      (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') &&
      typeof message === 'string' &&
      message.includes(`'${name}'`)
    if (!missing) throw error
    throw new ConfigError(
      'driver',
      `${user} needs the ${name} package, which is not installed: npm install ${name}`,
    )
  }
}
