// Fill the token from a `#token=...` login link, then submit. The fragment never reaches the
// server or its logs; it is removed from the address bar before anything else happens.
'use strict';

(() => {
  const match = /^#token=(.+)$/.exec(window.location.hash);
  if (!match) return;
  history.replaceState(null, '', window.location.pathname + window.location.search);
  const form = document.getElementById('login-form');
  form.elements.token.value = decodeURIComponent(match[1]);
  form.submit();
})();
