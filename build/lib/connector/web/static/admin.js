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

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { copyField(button); });
  });
  // A refused action: take keyboard and screen-reader users to the reason.
  var error = document.querySelector(".flashes .flash.error");
  if (error) { error.focus(); }
});
