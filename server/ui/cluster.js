// The cluster view: every member with its own report (`/v1/node` on that
// member) beside what the leader knows of it (`/v1/cluster` on the leader:
// reachable, last contact, replication lag). Members that stop answering
// are shown down; members that leave the configuration are kept as removed.

import { json, memberUrl, el } from './api.js';

const REFRESH_MS = 2000;
// Members seen earlier and gone from the configuration since.
const removed = new Map();
let lastMembers = new Map();

export function startCluster({ table, meta, onStatus }) {
  const tick = async () => {
    try {
      const status = await snapshot();
      render(table, meta, status);
      onStatus(status, null);
    } catch (e) {
      onStatus(null, e);
    }
    setTimeout(tick, REFRESH_MS);
  };
  tick();
}

async function snapshot() {
  const [cluster, self] = await Promise.all([json('/v1/cluster'), json('/v1/node')]);
  const members = cluster.cluster.nodes;
  const leader = cluster.cluster.leader;
  const me = self.node;
  // The leader's view, from here if this node leads, else asked of it.
  let leaderView = null;
  let leaderError = null;
  if (leader && leader === me.id) {
    leaderView = members;
  } else if (leader && members[leader]) {
    try {
      const url = memberUrl(members[leader].metadata.http_addr, '/v1/cluster');
      leaderView = (await json(url, { timeout: 1500 })).cluster.nodes;
    } catch (e) {
      leaderError = e;
    }
  }
  const names = Object.keys(members).sort();
  const reports = await Promise.all(
    names.map(async (name) => {
      if (name === me.id) return { node: me };
      try {
        const url = memberUrl(members[name].metadata.http_addr, '/v1/node');
        return { node: (await json(url, { timeout: 1500 })).node };
      } catch (e) {
        return { error: e };
      }
    }),
  );
  for (const name of names) removed.delete(name);
  for (const [name, member] of lastMembers) {
    if (!members[name]) removed.set(name, member);
  }
  lastMembers = new Map(Object.entries(members));
  return { members, names, leader, me, leaderView, leaderError, reports };
}

// What to call a member: its own state, unless it does not answer or the
// leader cannot reach it.
function health(member, report, seenByLeader) {
  if (report.error) {
    return { label: 'Down', tone: 'bad', title: report.error.describe() };
  }
  if (seenByLeader && seenByLeader.reachable === false) {
    const since = seenByLeader.last_contact_ms;
    return {
      label: `${report.node.state}, unreachable from the leader`,
      tone: 'bad',
      title: since === null ? 'never answered this leader' : `last answer ${since} ms ago`,
    };
  }
  const state = report.node.state;
  return { label: state, tone: state === 'Leader' ? 'leader' : state === 'Follower' ? 'ok' : 'warn' };
}

function render(table, meta, status) {
  const { members, names, leader, me, leaderView, leaderError, reports } = status;
  const body = el('tbody');
  names.forEach((name, i) => {
    const member = members[name];
    const report = reports[i];
    const seen = leaderView ? leaderView[name] : null;
    const state = health(member, report, seen);
    const node = report.node || {};
    const isLeader = name === leader;
    const contact = seen && seen.last_contact_ms !== null && seen.last_contact_ms !== undefined
      ? `${seen.last_contact_ms} ms ago`
      : seen ? 'never' : '?';
    body.append(
      el('tr', { 'data-member': name, 'data-state': state.label, class: isLeader ? 'is-leader' : null },
        el('td', {}, el('strong', {}, name), isLeader ? el('span', { class: 'badge leader' }, 'leader') : null,
          name === me.id ? el('span', { class: 'badge' }, 'this page') : null),
        el('td', { class: `state ${state.tone}`, title: state.title }, state.label),
        el('td', {}, member.voter ? 'voter' : 'learner'),
        el('td', { class: 'num' }, node.term ?? '–'),
        el('td', { class: 'num' }, node.commit_index ?? '–'),
        el('td', { class: 'num' }, node.last_applied ?? '–'),
        el('td', { class: 'num' }, node.last_log_index ?? '–'),
        el('td', { class: 'num', 'data-field': 'lag' }, seen ? seen.replication_lag ?? '–' : '?'),
        el('td', { class: 'num' }, contact),
        el('td', { class: 'addr' }, member.metadata.http_addr),
        el('td', { class: 'addr' }, member.metadata.grpc_addr),
        el('td', { class: 'addr' }, member.bind_addr),
      ),
    );
  });
  for (const [name, member] of removed) {
    body.append(
      el('tr', { 'data-member': name, 'data-state': 'Removed', class: 'removed' },
        el('td', {}, el('strong', {}, name)),
        el('td', { class: 'state warn' }, 'Removed'),
        el('td', { colspan: 7 }, 'no longer in the configuration'),
        el('td', { class: 'addr' }, member.metadata.http_addr),
        el('td', { class: 'addr' }, member.metadata.grpc_addr),
        el('td', { class: 'addr' }, member.bind_addr),
      ),
    );
  }
  table.tBodies[0].replaceWith(body);
  const parts = [
    leader ? `leader ${leader}` : 'no leader known',
    `term ${me.term}`,
    `${names.length} members`,
    `refreshed ${new Date().toLocaleTimeString()}`,
  ];
  if (leaderError) parts.push(`the leader's view is unavailable: ${leaderError.describe()}`);
  meta.textContent = parts.join(' · ');
}
