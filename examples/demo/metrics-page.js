// The metrics page's refresh, served as /metrics.js: every second it fetches the counters again
// (/metrics/live, rendered by the server from what the OpenTelemetry SDK collected) and marks the values
// that changed since the last look.
const container = document.getElementById('metrics')

/** Each shown value by where it is: `instrument|attributes`, or `glance|id` for the sums at the top. */
function values() {
  const seen = new Map()
  for (const cell of container?.querySelectorAll('[data-value]') ?? [])
    seen.set(where(cell), cell.dataset.value)
  return seen
}

function where(cell) {
  if (cell.id.startsWith('glance-')) return `glance|${cell.id}`
  const row = cell.closest('tr')
  const section = cell.closest('[data-metric]')
  return `${section?.getAttribute('data-metric')}|${row?.getAttribute('data-attrs')}`
}

async function refresh() {
  try {
    const response = await fetch('/metrics/live', { cache: 'no-store' })
    if (!response.ok || !container) return
    const before = values()
    container.innerHTML = await response.text()
    for (const cell of container.querySelectorAll('[data-value]')) {
      if (before.get(where(cell)) !== cell.dataset.value) cell.classList.add('changed')
    }
    container.dataset.refreshes = String(Number(container.dataset.refreshes ?? '0') + 1)
  } catch {
    // The demo stopped, or the network blinked: try again at the next tick.
  }
}

if (container) setInterval(refresh, 1000)
