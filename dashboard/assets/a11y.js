// Dash 4 renders checklists and radio items as an ARIA listbox of options holding real inputs:
// screen readers then announce a listbox with nested controls and no name. Plain inputs
// in a fieldset are the accessible pattern, so the ARIA roles are taken off again, and the
// group is named by its legend, whenever Dash (re)renders one.
(function () {
  function repair(root) {
    // Only changes are written: an unchanged write would wake the observer again, for ever.
    root.querySelectorAll('.dash-options-list[role="listbox"]').forEach(function (list) {
      var radios = list.querySelector('input[type="radio"]') !== null;
      list.setAttribute("role", radios ? "radiogroup" : "group");
      var fieldset = list.closest("fieldset");
      var legend = fieldset && fieldset.querySelector("legend");
      if (legend) {
        if (!legend.id) { legend.id = list.id + "-legend"; }
        if (list.getAttribute("aria-labelledby") !== legend.id) {
          list.setAttribute("aria-labelledby", legend.id);
        }
      }
    });
    root.querySelectorAll('.dash-options-list [role="option"]').forEach(function (option) {
      option.removeAttribute("role");
      option.removeAttribute("aria-selected");
    });
    // A drop-down's tab stop is a hidden helper input that announces nothing, and its button
    // is named by the value alone. The button becomes the tab stop, named by the page's label
    // (an element "<id>-label") and then its value.
    root.querySelectorAll('.dash-dropdown-focus-target[aria-hidden="true"]').forEach(function (el) {
      if (el.getAttribute("tabindex") !== "-1") { el.setAttribute("tabindex", "-1"); }
    });
    root.querySelectorAll("button.dash-dropdown[id]").forEach(function (button) {
      if (button.getAttribute("tabindex") !== "0") { button.setAttribute("tabindex", "0"); }
      var label = document.getElementById(button.id + "-label");
      var named = label ? label.id + " " + button.id + "-value" : null;
      if (named && button.getAttribute("aria-labelledby") !== named) {
        button.setAttribute("aria-labelledby", named);
      }
    });
  }
  new MutationObserver(function () { repair(document); })
    .observe(document.documentElement, { childList: true, subtree: true, attributes: true,
                                         attributeFilter: ["role", "tabindex", "aria-labelledby"] });
})();
