import { afterEach, describe, expect, test, vi } from 'vitest'
import { ConfigError } from '../core/errors.js'
import { schedulePrune, validatePruneInterval } from './prune-timer.js'

afterEach(() => {
  vi.useRealTimers()
  vi.restoreAllMocks()
})

/** A prune that counts its runs and resolves (or rejects) when the test says so, or at once. */
function countingPrune(outcome: () => Promise<unknown> = async () => 0) {
  const prune = vi.fn(outcome)
  return prune
}

describe('validatePruneInterval', () => {
  test.each([0, 1, 300_000, 2_147_483_647])('accepts %d', (value) => {
    expect(validatePruneInterval(value)).toBe(value)
  })

  test.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2_147_483_648, '1000', null])(
    'refuses %j with a ConfigError naming the option',
    (value) => {
      expect(() => validatePruneInterval(value, 'store.pruneIntervalMs')).toThrow(ConfigError)
      expect(() => validatePruneInterval(value, 'store.pruneIntervalMs')).toThrow(
        expect.objectContaining({ option: 'store.pruneIntervalMs' }),
      )
    },
  )
})

describe('schedulePrune', () => {
  test('waits between 0.75 and 1.25 times the interval before each run', async () => {
    vi.useFakeTimers()
    const random = vi.spyOn(Math, 'random')
    const prune = countingPrune()
    random.mockReturnValue(0)
    const stop = schedulePrune(prune, 1000, () => {})
    await vi.advanceTimersByTimeAsync(749)
    expect(prune).toHaveBeenCalledTimes(0)
    await vi.advanceTimersByTimeAsync(1)
    expect(prune).toHaveBeenCalledTimes(1)
    // The second wait was drawn when the first run settled, still at 0.75 s; the third is 1.25 s.
    random.mockReturnValue(0.999_999)
    await vi.advanceTimersByTimeAsync(750)
    expect(prune).toHaveBeenCalledTimes(2)
    await vi.advanceTimersByTimeAsync(1249)
    expect(prune).toHaveBeenCalledTimes(2)
    await vi.advanceTimersByTimeAsync(1)
    expect(prune).toHaveBeenCalledTimes(3)
    stop()
  })

  test('never overlaps runs: the next wait starts when the last run settles', async () => {
    vi.useFakeTimers()
    let finish = (): void => {}
    const prune = countingPrune(
      () =>
        new Promise((resolve) => {
          finish = () => resolve(0)
        }),
    )
    const stop = schedulePrune(prune, 1000, () => {})
    await vi.advanceTimersByTimeAsync(1250)
    expect(prune).toHaveBeenCalledTimes(1)
    await vi.advanceTimersByTimeAsync(60_000)
    expect(prune).toHaveBeenCalledTimes(1)
    finish()
    await vi.advanceTimersByTimeAsync(1250)
    expect(prune).toHaveBeenCalledTimes(2)
    stop()
  })

  test('hands a failing run to onError and goes on', async () => {
    vi.useFakeTimers()
    const failure = new Error('database down')
    const prune = countingPrune(async () => {
      throw failure
    })
    const errors: unknown[] = []
    const stop = schedulePrune(prune, 1000, (error) => errors.push(error))
    await vi.advanceTimersByTimeAsync(3 * 1250)
    expect(prune.mock.calls.length).toBeGreaterThanOrEqual(3)
    expect(errors).toEqual(prune.mock.calls.map(() => failure))
    stop()
  })

  test('the returned function stops it; 0 schedules nothing', async () => {
    vi.useFakeTimers()
    const prune = countingPrune()
    const stop = schedulePrune(prune, 1000, () => {})
    expect(vi.getTimerCount()).toBe(1)
    stop()
    expect(vi.getTimerCount()).toBe(0)
    const off = schedulePrune(prune, 0, () => {})
    expect(vi.getTimerCount()).toBe(0)
    off()
    await vi.advanceTimersByTimeAsync(60_000)
    expect(prune).not.toHaveBeenCalled()
  })

  test('its timer never keeps the process alive', () => {
    const timeouts = () => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
    const before = timeouts()
    const stop = schedulePrune(countingPrune(), 60_000, () => {})
    expect(timeouts()).toBe(before)
    stop()
  })
})
