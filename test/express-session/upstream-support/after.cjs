// Stand-in for the `after` package (0.8.2) as express-session's tests use it: after(count, callback)
// returns a function to call `count` times; the callback runs once, with the first error, or with
// nothing after the last call. A call past `count` throws.
'use strict'
module.exports = function after(count, callback) {
  let left = count
  let failed = false
  if (count === 0) return callback()
  return function step(error, result) {
    if (left <= 0) throw new Error('after called too many times')
    left -= 1
    if (error) {
      if (!failed) callback(error)
      failed = true
    } else if (left === 0 && !failed) {
      callback(null, result)
    }
  }
}
