// The live feed: `/v1/watch` through EventSource, newest first, at most
// MAX_EVENTS kept. Every event carries `id: <revision>`, so when the stream
// drops, the browser reconnects with `Last-Event-ID` and the server resumes
// right after the last event shown: nothing is missed or repeated.

import { el, formatBytes } from './api.js';

const MAX_EVENTS = 200;

export function startFeed(root) {
  const $ = (id) => root.querySelector(`[data-testid="${id}"]`);
  const prefixInput = $('watch-prefix');
  const toggle = $('watch-toggle');
  const status = $('watch-status');
  const feed = $('watch-feed');
  let source = null;
  let last = 0; // the newest revision shown

  function setStatus(tone, text) {
    status.className = `status ${tone}`;
    status.dataset.tone = tone;
    status.textContent = text;
  }

  function add(kind, event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (e) {
      setStatus('bad', `unreadable event: ${e.message}`);
      return;
    }
    if (data.revision <= last) return; // already shown
    last = data.revision;
    let detail = '';
    if (kind === 'put') {
      const value = data.value !== undefined ? data.value
        : data.value_omitted ? '(value too large to stream)' : '(binary value)';
      detail = `${formatBytes(data.size)} · ${data.content_type} · ${value.length > 80 ? value.slice(0, 80) + '…' : value}`;
    }
    feed.prepend(
      el('li', { class: `event ${kind}`, 'data-revision': data.revision, 'data-key': data.key, 'data-type': kind },
        el('span', { class: 'time' }, new Date().toLocaleTimeString()),
        el('span', { class: `badge ${kind}` }, kind),
        el('span', { class: 'key' }, data.key),
        el('span', { class: 'rev' }, `rev ${data.revision}`),
        el('span', { class: 'detail' }, detail),
      ),
    );
    while (feed.children.length > MAX_EVENTS) feed.lastElementChild.remove();
  }

  function start() {
    stop();
    feed.replaceChildren();
    last = 0;
    const prefix = prefixInput.value;
    source = new EventSource(`/v1/watch?prefix=${encodeURIComponent(prefix)}`);
    setStatus('warn', 'connecting…');
    source.addEventListener('open', () => {
      setStatus('ok', last ? `connected, resumed after revision ${last}` : `connected, watching "${prefix}"`);
    });
    source.addEventListener('put', (e) => add('put', e));
    source.addEventListener('delete', (e) => add('delete', e));
    // Both the server's `event: error` (a JSON body, then the stream ends)
    // and a dropped connection arrive as "error".
    source.addEventListener('error', (e) => {
      if (e.data) {
        let message = e.data;
        try {
          const body = JSON.parse(e.data);
          message = `${body.error.code}: ${body.error.message}`;
        } catch (_) {
          // keep the raw text
        }
        setStatus('bad', `the server ended the stream: ${message}`);
        return; // the browser reconnects and resumes after `last`
      }
      if (source.readyState === EventSource.CLOSED) {
        setStatus('bad', 'closed: the node refused the stream; press Start to retry');
      } else {
        setStatus('warn', `disconnected, reconnecting${last ? ` to resume after revision ${last}` : ''}…`);
      }
    });
    toggle.textContent = 'Stop';
  }

  function stop() {
    if (source) source.close();
    source = null;
    toggle.textContent = 'Start';
    setStatus('', 'stopped');
  }

  toggle.addEventListener('click', () => (source ? stop() : start()));
  prefixInput.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      start();
    }
  });
  return { start, running: () => source !== null };
}
