// After payment: send the browser to the router's login at once (the button stays for no-JS phones).
(function () {
  var form = document.getElementById("router-login");
  if (form) { form.submit(); }
})();
