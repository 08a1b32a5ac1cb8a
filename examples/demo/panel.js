// The panel's countdowns, served as /panel.js: each [data-countdown] starts from the time left that the
// server computed (data-left-ms, by its clock) and counts down by this page's monotonic clock.
const started = performance.now()
const countdowns = [...document.querySelectorAll('[data-countdown]')]

function format(ms) {
  const s = Math.ceil(ms / 1000)
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  return `${h > 0 ? `${h} h ` : ''}${String(m).padStart(h > 0 ? 2 : 1, '0')} min ${String(s % 60).padStart(2, '0')} s`
}

function tick() {
  const elapsed = performance.now() - started
  for (const element of countdowns) {
    const left = Math.max(0, Number(element.getAttribute('data-left-ms')) - elapsed)
    element.textContent = left > 0 ? format(left) : 'now'
  }
}

if (countdowns.length > 0) setInterval(tick, 1000)
