// unseat console: times in the viewer's zone, and live updates over server-sent events.
// Every page works without this script; it only adds what a static page cannot do.
(function () {
  'use strict';

  // Rewrites each <time> into the viewer's zone; its title keeps the UTC instant for hover.
  function localTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (el) {
      var d = new Date(el.getAttribute('datetime'));
      if (isNaN(d.getTime())) return;
      el.textContent = d.toLocaleString(undefined, {
        year: 'numeric', month: 'short', day: 'numeric',
        hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short'
      });
    });
  }

  localTimes(document);

  var url = document.body.getAttribute('data-live');
  if (!url || !window.EventSource || !window.fetch || !window.DOMParser) return;
  var indicator = document.getElementById('live-state');
  function say(text) { if (indicator) indicator.textContent = text; }
  say('Connecting live updates…');

  // Re-reads this very URL (same filters, same page) and swaps each live region in place, so
  // the scroll position and the filter form stay as they are.
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, 'text/html');
        document.querySelectorAll('[data-live-region]').forEach(function (el) {
          var next = el.id && fresh.getElementById(el.id);
          if (next) { el.innerHTML = next.innerHTML; localTimes(el); }
        });
        say('Live · updated ' + new Date().toLocaleTimeString());
      })
      .catch(function () { say('Live update failed; retrying on the next change'); })
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  var source = new EventSource(url);
  source.addEventListener('change', refresh);
  source.onopen = function () { say('Live'); };
  source.onerror = function () { say('Live updates reconnecting…'); };
})();
