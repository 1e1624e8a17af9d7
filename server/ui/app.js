// The Cete dashboard: three views (cluster, keys, live feed) on one page,
// chosen by the URL's fragment. Served by every node; talks to the node
// that served it (and, for what only they know, to the other members).

import { ApiError } from './api.js';
import { startCluster } from './cluster.js';
import { startKeys } from './keys.js';
import { startFeed } from './feed.js';

const banner = document.getElementById('banner');

function showError(error, source = 'page') {
  const message = error instanceof ApiError ? error.describe() : `${error && error.message ? error.message : error}`;
  banner.textContent = message;
  banner.dataset.source = source;
  banner.hidden = false;
}

function clearError() {
  banner.hidden = true;
  banner.textContent = '';
}

// Nothing fails silently: anything not handled where it happened ends here.
window.addEventListener('unhandledrejection', (e) => {
  e.preventDefault();
  showError(e.reason);
});
window.addEventListener('error', (e) => showError(e.error || e.message));
banner.addEventListener('click', clearError);

const whoami = document.getElementById('whoami');
startCluster({
  table: document.querySelector('[data-testid="cluster-table"]'),
  meta: document.getElementById('cluster-meta'),
  onStatus(status, error) {
    if (error) {
      whoami.textContent = 'this node does not answer';
      whoami.className = 'bad';
      showError(error, 'cluster');
      return;
    }
    const { me, leader } = status;
    whoami.className = '';
    whoami.textContent = `${me.id} · ${me.state}${leader && leader !== me.id ? ` · leader ${leader}` : ''}`;
    if (banner.dataset.source === 'cluster') clearError();
  },
});

const keys = startKeys(document.getElementById('keys'), { onError: showError });
const feed = startFeed(document.getElementById('feed'));

const views = ['cluster', 'keys', 'feed'];
function route() {
  const name = views.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'cluster';
  for (const view of views) {
    document.getElementById(view).hidden = view !== name;
    document.querySelector(`[data-testid="tab-${view}"]`).classList.toggle('active', view === name);
  }
  if (name === 'keys' && !keys.loaded) {
    keys.loaded = true;
    keys.refresh();
  }
  if (name === 'feed' && !feed.started) {
    feed.started = true;
    feed.start();
  }
}
window.addEventListener('hashchange', route);
route();
