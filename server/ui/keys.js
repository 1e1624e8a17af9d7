// The keys view: prefix search with the list API's cursor, a value viewer
// that shows each value by its content type, put (plain or conditional) and
// delete with a confirmation.

import { ApiError, call, json, keyPath, el, formatBytes } from './api.js';

const PAGE = 50;
const HEX_LIMIT = 4096;

export function startKeys(root, { onError }) {
  const $ = (id) => root.querySelector(`[data-testid="${id}"]`);
  const search = $('key-search');
  const list = $('key-list');
  const more = $('key-more');
  const view = $('value-view');
  const form = root.querySelector('#put-form');
  const putKey = $('put-key');
  const putValue = $('put-value');
  const putType = $('put-content-type');
  const putFile = $('put-file');
  const condition = $('put-condition');
  const revision = $('put-revision');
  const result = $('put-result');
  let cursor = null;
  let prefix = '';
  let current = null; // the value shown: { key, revision, contentType }
  let objectUrl = null;

  async function load(append) {
    const params = new URLSearchParams({ prefix, limit: String(PAGE) });
    if (append && cursor !== null) params.set('start_after', cursor);
    const page = await json(`/v1/data?${params}`);
    const body = list.tBodies[0];
    if (!append) body.replaceChildren();
    for (const entry of page.keys) {
      body.append(
        el('tr', {},
          el('td', {}, el('button', { type: 'button', class: 'key', 'data-testid': 'key-name', onclick: () => show(entry.key).catch(onError) }, entry.key)),
          el('td', { class: 'num' }, formatBytes(entry.size)),
          el('td', {}, entry.content_type),
          el('td', { class: 'num' }, entry.revision),
        ),
      );
    }
    if (!append && page.keys.length === 0) {
      body.append(el('tr', {}, el('td', { colspan: 4, class: 'hint' }, prefix ? `no keys start with "${prefix}"` : 'no keys yet')));
    }
    cursor = page.more ? page.next_start_after : null;
    more.hidden = !page.more;
  }

  search.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter') return;
    e.preventDefault();
    prefix = search.value;
    load(false).catch(onError);
  });
  root.querySelector('#search-button').addEventListener('click', () => {
    prefix = search.value;
    load(false).catch(onError);
  });
  more.addEventListener('click', () => load(true).catch(onError));

  async function show(key) {
    const response = await call(keyPath(key));
    const contentType = response.headers.get('content-type') || 'application/octet-stream';
    const rev = Number(response.headers.get('x-cete-revision'));
    const created = response.headers.get('x-cete-create-revision');
    const bytes = new Uint8Array(await response.arrayBuffer());
    current = { key, revision: rev, contentType, bytes };
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = null;
    const kind = kindOf(contentType);
    let content;
    if (kind === 'image') {
      objectUrl = URL.createObjectURL(new Blob([bytes], { type: contentType }));
      content = el('img', { src: objectUrl, alt: key, class: 'value-image' });
    } else if (kind === 'json') {
      const text = new TextDecoder().decode(bytes);
      try {
        content = el('pre', { class: 'value-text' }, JSON.stringify(JSON.parse(text), null, 2));
      } catch (e) {
        content = el('div', {}, el('p', { class: 'warn' }, `not valid JSON (${e.message}); shown as text`), el('pre', { class: 'value-text' }, text));
      }
    } else if (kind === 'text') {
      content = el('pre', { class: 'value-text' }, new TextDecoder().decode(bytes));
    } else {
      content = el('pre', { class: 'value-hex' }, hexDump(bytes));
    }
    view.replaceChildren(
      el('h3', {}, key),
      el('p', { class: 'meta' }, `${formatBytes(bytes.length)} (${bytes.length} bytes) · ${contentType} · revision ${rev} · created at ${created}`),
      el('div', { class: 'value', 'data-kind': kind }, content),
      el('div', { class: 'actions' },
        el('button', { type: 'button', 'data-testid': 'edit-key', onclick: () => edit() }, 'Edit'),
        el('button', { type: 'button', class: 'danger', 'data-testid': 'delete-key', onclick: () => confirmDelete() }, 'Delete…'),
      ),
      el('div', { id: 'delete-box' }),
    );
  }

  function edit() {
    putKey.value = current.key;
    putType.value = current.contentType;
    putValue.value = kindOf(current.contentType) === 'image' || kindOf(current.contentType) === 'binary'
      ? '' : new TextDecoder().decode(current.bytes);
    condition.value = 'if-match';
    revision.value = String(current.revision);
    revision.disabled = false;
    putValue.focus();
  }

  function confirmDelete() {
    const { key } = current;
    const box = view.querySelector('#delete-box');
    box.replaceChildren(
      el('div', { class: 'confirm', role: 'alertdialog' },
        el('p', {}, `Delete "${key}"? This cannot be undone.`),
        el('button', { type: 'button', class: 'danger', 'data-testid': 'delete-confirm', onclick: () => remove(key).catch(onError) }, 'Delete'),
        el('button', { type: 'button', 'data-testid': 'delete-cancel', onclick: () => box.replaceChildren() }, 'Cancel'),
      ),
    );
  }

  async function remove(key) {
    const response = await call(keyPath(key), { method: 'DELETE' });
    const { revision: rev } = await response.json();
    view.replaceChildren(el('p', { class: 'ok', 'data-testid': 'delete-result' }, `Deleted "${key}" at revision ${rev}.`));
    current = null;
    await load(false);
  }

  condition.addEventListener('change', () => {
    revision.disabled = condition.value !== 'if-match';
  });
  putFile.addEventListener('change', () => {
    const file = putFile.files[0];
    if (file && file.type) putType.value = file.type;
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = putKey.value;
    if (!key) {
      showResult('bad', 'A key is needed.');
      return;
    }
    const headers = { 'content-type': putType.value.trim() || 'application/octet-stream' };
    if (condition.value === 'if-match') {
      if (!/^\d+$/.test(revision.value.trim())) {
        showResult('bad', 'The revision to match must be a whole number.');
        return;
      }
      headers['if-match'] = `"${revision.value.trim()}"`;
    } else if (condition.value === 'if-absent') {
      headers['if-none-match'] = '*';
    }
    const file = putFile.files[0];
    const body = file ? await file.arrayBuffer() : putValue.value;
    try {
      const response = await call(keyPath(key), { method: 'PUT', headers, body });
      const { revision: rev } = await response.json();
      const what = response.status === 201 ? 'created' : 'updated';
      showResult('ok', `Stored "${key}" at revision ${rev} (${what}).`);
      putFile.value = '';
      if (condition.value === 'if-match') revision.value = String(rev);
      if (key.startsWith(prefix)) await load(false);
      if (current && current.key === key) await show(key);
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        showResult('conflict', `412 Precondition Failed: nothing was written, the key changed meanwhile (${err.message}).`,
          el('button', { type: 'button', onclick: () => show(key).then(edit).catch(onError) }, 'Load the current value'));
      } else if (err instanceof ApiError) {
        showResult('bad', `Not stored: ${err.describe()}`);
      } else {
        throw err;
      }
    }
  });

  function showResult(tone, message, ...extra) {
    result.className = `result ${tone}`;
    result.dataset.tone = tone;
    result.replaceChildren(el('span', {}, message), ...extra);
    result.hidden = false;
  }

  return { refresh: () => load(false).catch(onError) };
}

// How a content type is shown.
export function kindOf(contentType) {
  const type = contentType.split(';')[0].trim().toLowerCase();
  if (type.startsWith('image/')) return 'image';
  if (type === 'application/json' || type.endsWith('+json')) return 'json';
  if (type.startsWith('text/') || type.endsWith('+xml') || /^application\/(xml|yaml|x-yaml|javascript|toml)$/.test(type)) return 'text';
  if (/charset=/i.test(contentType)) return 'text';
  return 'binary';
}

// Offset, 16 bytes in hex, the same as ASCII; the first HEX_LIMIT bytes.
export function hexDump(bytes) {
  const lines = [];
  const shown = bytes.subarray(0, HEX_LIMIT);
  for (let offset = 0; offset < shown.length; offset += 16) {
    const row = shown.subarray(offset, offset + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${offset.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
  }
  if (bytes.length > HEX_LIMIT) lines.push(`… ${bytes.length - HEX_LIMIT} more bytes not shown`);
  if (bytes.length === 0) lines.push('(empty)');
  return lines.join('\n');
}
