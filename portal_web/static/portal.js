// Smoother, never required: every page works without this file.
(function () {
  "use strict";
  // After payment: send the browser to the router's login at once (the button stays for no-JS phones),
  // but only where the page says so: never after the router refused, never twice in a row.
  var form = document.getElementById("router-login");
  if (form) {
    if (form.getAttribute("data-auto") === "1") {
      var hint = document.getElementById("connect-hint");
      if (hint) { hint.textContent = hint.getAttribute("data-connecting"); }
      form.submit();
    }
    return;
  }

  // Waiting for M-Pesa: tick the countdown and ask for the status instead of reloading the page.
  var box = document.getElementById("status");
  if (!box || box.getAttribute("data-status") !== "pending") { return; }
  var left = parseInt(box.getAttribute("data-seconds"), 10) || 0;
  var counter = document.getElementById("countdown");
  var url = "/api/portal/status/" + encodeURIComponent(box.getAttribute("data-checkout"));
  setInterval(function () {
    if (left > 0) { left -= 1; counter.textContent = left; }
  }, 1000);
  function poll() {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", url);
    xhr.onload = function () {
      var status = "pending";
      try { status = JSON.parse(xhr.responseText).status; } catch (e) { /* keep waiting */ }
      if (status !== "pending") { window.location.reload(); } else { setTimeout(poll, 2000); }
    };
    xhr.onerror = function () { setTimeout(poll, 3000); };
    xhr.send();
  }
  setTimeout(poll, 1500);
})();
