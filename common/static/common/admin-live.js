/*
 * Live status for the Mirage admin pages.
 *
 * Every element with data-live-url and data-live-id is kept current: the ids
 * on the page are grouped by their progress URL, each URL is asked for the
 * state of its ids (one request per URL), and the elements are updated in
 * place according to data-live-role:
 *   badge     text and colour from the status
 *   progress  bar width, aria-valuenow and label
 *   field     text of the named field (data-live-field)
 *   refresh   a panel drawn on the server (a list, buttons): when the
 *             state's refresh_key differs from its data-live-version, the
 *             page is fetched again and the panel replaced by its new copy
 * An element with data-live-part reads that part of the state (the document
 * page's job panel reads "job"), so panels fed by one answer agree.
 * Panels are replaced before the answer is applied to the other elements,
 * so the whole page moves to a new state together.
 * Pages poll every second while anything on them is still active, and
 * slowly once everything has finished (another operator may restart it).
 */
(function () {
  "use strict";

  var ACTIVE_INTERVAL_MS = 1000;
  var IDLE_INTERVAL_MS = 5000;
  var ERROR_INTERVAL_MS = 10000;
  var MAX_IDS_PER_REQUEST = 500;

  function liveGroups() {
    var groups = new Map();
    document.querySelectorAll("[data-live-url][data-live-id]").forEach(function (element) {
      var url = element.dataset.liveUrl;
      var id = element.dataset.liveId;
      if (!groups.has(url)) {
        groups.set(url, new Map());
      }
      var elementsById = groups.get(url);
      if (!elementsById.has(id)) {
        elementsById.set(id, []);
      }
      elementsById.get(id).push(element);
    });
    return groups;
  }

  function replaceStatusClass(element, prefix, status) {
    Array.from(element.classList).forEach(function (name) {
      if (name.indexOf(prefix + "--") === 0) {
        element.classList.remove(name);
      }
    });
    element.classList.add(prefix + "--" + status);
  }

  function apply(element, state) {
    var role = element.dataset.liveRole;
    var part = element.dataset.livePart;
    var item = part ? state[part] : state;
    if (!item) {
      return;
    }
    if (role === "badge") {
      replaceStatusClass(element, "mirage-badge", item.status);
      if (element.textContent !== item.status) {
        element.textContent = item.status;
      }
    } else if (role === "progress") {
      replaceStatusClass(element, "mirage-progress", item.status);
      element.setAttribute("aria-valuenow", String(item.percent));
      var bar = element.querySelector(".mirage-progress__bar");
      if (bar) {
        bar.style.width = item.percent + "%";
      }
      var label = element.querySelector(".mirage-progress__label");
      if (label && label.textContent !== item.label) {
        label.textContent = item.label;
      }
    } else if (role === "field") {
      var fields = item.fields || {};
      var name = element.dataset.liveField;
      if (Object.prototype.hasOwnProperty.call(fields, name)) {
        var text = String(fields[name]);
        if (element.textContent !== text) {
          element.textContent = text;
        }
      }
    }
  }

  function isStale(element, item) {
    return element.dataset.liveRole === "refresh" && item.refresh_key !== undefined &&
      element.dataset.liveVersion !== String(item.refresh_key);
  }

  var refreshing = false;

  // Fetch this page again and put the new copies of `panels` in place.
  function refreshPanels(panels) {
    if (refreshing) {
      return Promise.resolve();
    }
    refreshing = true;
    return fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    }).then(function (response) {
      if (!response.ok || response.redirected) {
        throw new Error("page refresh failed: " + response.status);
      }
      return response.text();
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      panels.forEach(function (panel) {
        var copy = panel.id && fresh.getElementById(panel.id);
        if (copy) {
          panel.replaceWith(document.importNode(copy, true));
        }
      });
    }).finally(function () {
      refreshing = false;
    });
  }

  function fetchGroup(url, elementsById) {
    var ids = Array.from(elementsById.keys()).slice(0, MAX_IDS_PER_REQUEST);
    var separator = url.indexOf("?") === -1 ? "?" : "&";
    return fetch(url + separator + "ids=" + ids.join(","), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      // A redirect means the session ended (admin_view sends it to login).
      if (!response.ok || response.redirected) {
        var error = new Error("progress request failed: " + response.status);
        error.fatal = response.redirected || response.status === 403;
        throw error;
      }
      return response.json();
    }).then(function (payload) {
      var items = payload.items || {};
      var stale = [];
      elementsById.forEach(function (elements, id) {
        elements.forEach(function (element) {
          if (items[id] && isStale(element, items[id])) {
            stale.push(element);
          }
        });
      });
      var panelsDone = stale.length ? refreshPanels(stale) : Promise.resolve();
      return panelsDone.then(function () {
        var active = false;
        elementsById.forEach(function (elements, id) {
          var item = items[id];
          if (!item) {
            return;
          }
          if (!item.final) {
            active = true;
          }
          // Read the page again: refreshed panels brought new elements.
          document.querySelectorAll('[data-live-url="' + url + '"][data-live-id="' + id + '"]')
            .forEach(function (element) {
              apply(element, item);
            });
        });
        return active;
      });
    });
  }

  function poll() {
    var groups = liveGroups();
    if (groups.size === 0) {
      return;
    }
    var requests = [];
    groups.forEach(function (elementsById, url) {
      requests.push(fetchGroup(url, elementsById));
    });
    Promise.all(requests).then(function (results) {
      var active = results.some(Boolean);
      schedule(active && !document.hidden ? ACTIVE_INTERVAL_MS : IDLE_INTERVAL_MS);
    }).catch(function (error) {
      if (window.console) {
        window.console.warn("Mirage live status:", error.message);
      }
      if (!error.fatal) {
        schedule(ERROR_INTERVAL_MS);
      }
    });
  }

  function schedule(delay) {
    window.setTimeout(poll, delay);
  }

  function start() {
    schedule(ACTIVE_INTERVAL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
