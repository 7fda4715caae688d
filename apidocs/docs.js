// Renders the proxy's own OpenAPI description with the embedded Swagger UI.
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Nothing leaves this origin: no validator badge from swagger.io.
    validatorUrl: null,
  });
});
