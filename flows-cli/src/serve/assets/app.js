// The dashboard's live updates: each page names an event stream and the URL of its fresh
// parts (#live). On a `changed` event it fetches them and swaps them in, without reloading.
// Everything swapped in is HTML the server rendered and escaped; nothing here builds markup
// from data.
(function () {
  'use strict';

  function setLive(on) {
    var el = document.getElementById('live-state');
    if (el) {
      el.textContent = on ? '\u25cf live' : '\u25cb reconnecting';
      el.className = 'live-state ' + (on ? 'on' : 'off');
    }
  }

  // Colours each node of the graph by its step's status (`step-completed`, ...).
  function colourGraph() {
    var section = document.getElementById('run-graph');
    if (!section) return;
    var statuses = {};
    try { statuses = JSON.parse(section.dataset.steps || '{}'); } catch (e) { statuses = {}; }
    section.querySelectorAll('[data-node]').forEach(function (g) {
      Array.prototype.slice.call(g.classList).forEach(function (c) {
        if (c.indexOf('step-') === 0) g.classList.remove(c);
      });
      var s = statuses[g.dataset.node];
      if (s) g.classList.add('step-' + s);
    });
  }

  async function refreshRuns(live) {
    var response = await fetch(live.dataset.refresh, { credentials: 'same-origin' });
    if (!response.ok) return;
    var rows = document.getElementById('run-rows');
    if (rows) rows.innerHTML = await response.text();
  }

  async function refreshRun(live) {
    var response = await fetch(live.dataset.refresh, { credentials: 'same-origin' });
    if (!response.ok) return;
    var doc = new DOMParser().parseFromString(await response.text(), 'text/html');
    doc.querySelectorAll('[data-live]').forEach(function (fresh) {
      var old = document.getElementById(fresh.id);
      if (!old) return;
      // Keep a form the person may be filling in while the question stays the same.
      if (fresh.id === 'run-question' && fresh.dataset.key && old.dataset.key === fresh.dataset.key) return;
      old.replaceWith(document.importNode(fresh, true));
    });
    colourGraph();
  }

  function watch(live, refresh) {
    var busy = false, again = false;
    async function update() {
      if (busy) { again = true; return; }
      busy = true;
      try { await refresh(live); } catch (e) { /* the next event tries again */ }
      busy = false;
      if (again) { again = false; update(); }
    }
    var source = new EventSource(live.dataset.events);
    source.addEventListener('open', function () { setLive(true); });
    source.addEventListener('error', function () { setLive(false); });
    source.addEventListener('changed', update);
  }

  document.addEventListener('DOMContentLoaded', function () {
    var live = document.getElementById('live');
    if (!live) return;
    // A page shown in answer to a form (an answer with errors) gets its own address back, so
    // reloading it does not post the form again.
    if (live.dataset.canonical && location.pathname + location.search !== live.dataset.canonical) {
      history.replaceState(null, '', live.dataset.canonical);
    }
    var page = document.body.dataset.page;
    if (page === 'runs') watch(live, refreshRuns);
    if (page === 'run') { colourGraph(); watch(live, refreshRun); }
  });
})();
