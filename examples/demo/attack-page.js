// The attack page's script, served as /attack.js by the attack origin (attack.ts). It attacks the demo
// from the visitor's browser, then asks its own server which of its requests the demo refused.
const demo = document.body.getAttribute('data-demo') ?? ''
const table = document.getElementById('attacks')
const attackerOrigin = document.getElementById('attacker-origin')
if (attackerOrigin) attackerOrigin.textContent = location.origin

/** A random id the demo files its refusal under (the requests carry it as ?attempt=). */
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12))
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')
}

function show(name, outcome, text) {
  const cell = table?.querySelector(`[data-attempt="${name}"] .outcome`)
  if (!cell) return
  cell.setAttribute('data-outcome', outcome)
  cell.textContent = text
}

/** Posts a form into a hidden frame, as a hostile page does without asking. */
function postForm(action, fields, target) {
  const form = document.createElement('form')
  form.method = 'post'
  form.action = action
  form.target = target
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement('input')
    input.type = 'hidden'
    input.name = name
    input.value = value
    form.append(input)
  }
  document.body.append(form)
  form.submit()
}

function describe(refusal) {
  const cookie = refusal.cookieCame
    ? 'your session cookie came along (SameSite=Lax lets a same-site request carry it), and still'
    : 'your session cookie stayed home (SameSite), and'
  return `Refused by the demo: ${refusal.status} ${refusal.reason} (Sec-Fetch-Site: ${refusal.site ?? 'none'}); ${cookie} nothing changed.`
}

const waiting = new Map() // attempt name -> id the demo files its refusal under

async function run() {
  const form = newId()
  waiting.set('form', form)
  postForm(`${demo}/counter?attempt=${form}`, { _csrf: 'made-up-token' }, 'sink-form')

  const login = newId()
  waiting.set('login', login)
  postForm(`${demo}/login?attempt=${login}`, { name: 'mallory', password: 'mallory' }, 'sink-login')

  try {
    const response = await fetch(`${demo}/`, { credentials: 'include' })
    const text = await response.text()
    show('fetch-read', 'succeeded', `Read ${text.length} characters of your page!`)
  } catch (error) {
    show(
      'fetch-read',
      'refused',
      `Refused by your browser (${error instanceof Error ? error.name : 'error'}): the demo grants no CORS, so neither the page nor its CSRF token can be read.`,
    )
  }

  const post = newId()
  waiting.set('fetch-post', post)
  try {
    await fetch(`${demo}/logout-others?attempt=${post}`, {
      method: 'POST',
      credentials: 'include',
      mode: 'no-cors',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'x=1',
    })
  } catch {
    // The demo's answer is opaque either way: its own report below says what it did.
  }

  // The demo files a refusal before its answer leaves: poll until each attempt is accounted for.
  for (let round = 0; round < 100 && waiting.size > 0; round++) {
    const ids = [...waiting.values()].join(',')
    const found = await (await fetch(`/refusals?ids=${ids}`)).json()
    for (const [name, id] of [...waiting]) {
      if (found[id]) {
        show(name, 'refused', describe(found[id]))
        waiting.delete(name)
      }
    }
    if (waiting.size > 0) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  for (const name of waiting.keys()) show(name, 'no-answer', 'The demo reported no refusal of this request.')
  const refused = table?.querySelectorAll('[data-outcome="refused"]').length ?? 0
  const summary = document.getElementById('summary')
  if (summary) summary.textContent = `${refused} of 4 attempts refused.`
  table?.setAttribute('data-done', '1')
}

run()
