// The API docs page: Swagger UI, served by the gateway from the pinned flask-swagger-ui wheel,
// renders openapi.json. Nothing is fetched from outside the gateway.
"use strict";

window.addEventListener("load", () => {
  window.ui = window.SwaggerUIBundle({
    // The page is served at /api/v1/docs and /api/v1/docs/: the spec URL is given, not relative.
    url: new URL(document.getElementById("swagger-ui").dataset.specUrl, window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // The default sends the document to an online validator and shows its badge.
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // "Authorize" keeps the X-API-Key across reloads (in this browser's localStorage).
    persistAuthorization: true,
  });
});
