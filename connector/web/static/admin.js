// Progressive enhancement for the admin UI: every page works without this file.
"use strict";

// Copy buttons next to read-only fields (SCIM base URL, a token shown once).
function copyField(button) {
  var field = document.getElementById(button.dataset.copy);
  var status = document.getElementById("copy-status");
  var said = function (text) {
    if (status) { status.textContent = text; }
  };
  var label = field.labels && field.labels.length ? field.labels[0].textContent : "Value";
  var fallback = function () {
    field.select();
    said(document.execCommand("copy") ? label + " copied." : "Select the text and copy it.");
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(function () {
      said(label + " copied to the clipboard.");
    }, fallback);
  } else {
    fallback();
  }
}

// A page showing a sync round's progress (data-progress-url) polls it while the round
// runs, or for a minute after one was started, and reloads when there is news.
var POLL_MS = 2000;
var STARTED_WATCH_MS = 60000;

function watchProgress(box) {
  var watchUntil = box.dataset.progressWatch === "running" ? Infinity
    : Date.now() + STARTED_WATCH_MS;
  var reload = function () {
    var url = new URL(window.location.href);
    url.searchParams.delete("started");  // a reload shows what is, not what was asked
    window.location.replace(url.toString());
  };
  var poll = function () {
    if (Date.now() > watchUntil) { return; }
    fetch(box.dataset.progressUrl, {credentials: "same-origin",
                                    headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (now) {
        if (now && now.key !== box.dataset.progressKey) { reload(); return; }
        window.setTimeout(poll, POLL_MS);
      }, function () { window.setTimeout(poll, POLL_MS * 2); });
  };
  window.setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", function () {
  var progress = document.querySelector("[data-progress-url]");
  if (progress) { watchProgress(progress); }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { copyField(button); });
  });
  // A refused action: take keyboard and screen-reader users to the reason.
  var error = document.querySelector(".flashes .flash.error");
  if (error) { error.focus(); }
});
