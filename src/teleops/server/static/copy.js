// Copy buttons (Tokens, invite codes): <button data-copy="ID"> copies the value or text of the element with that
// id. Without clipboard access the text is selected instead, and the button says to press Ctrl+C.
"use strict";

function selectAll(element) {
  if (typeof element.select === "function") {
    element.select();
    return;
  }
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = "value" in source ? source.value : source.textContent;
  const fallback = () => {
    selectAll(source);
    button.textContent = "Selected: press Ctrl+C";
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => { button.textContent = "Copied"; }, fallback);
  } else {
    fallback();
  }
});
