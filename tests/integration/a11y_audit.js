// The accessibility audit tests/integration/test_web_accessibility.py runs in each page (one expression that
// evaluates to a function). It reads the DOM and computed styles only: no library, nothing changed.
() => {
  const visible = (el) => {
    if (el.closest("[hidden], [aria-hidden='true']")) return false;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") return false;
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };
  const text = (el) => (el ? el.textContent.replace(/\s+/g, " ").trim() : "");
  const describe = (el) => {
    const bits = [el.tagName.toLowerCase()];
    if (el.id) bits.push(`#${el.id}`);
    if (el.getAttribute("name")) bits.push(`[name=${el.getAttribute("name")}]`);
    if (el.className && typeof el.className === "string") bits.push(`.${el.className.trim().split(/\s+/).join(".")}`);
    const words = text(el).slice(0, 40);
    return words ? `${bits.join("")} "${words}"` : bits.join("");
  };
  const labelledBy = (el) =>
    (el.getAttribute("aria-labelledby") || "")
      .split(/\s+/)
      .filter(Boolean)
      .map((id) => text(document.getElementById(id)))
      .join(" ")
      .trim();

  // Accessible name of a form control: a <label>, aria-label(ledby), title; a button's own text or value.
  const controlName = (el) => {
    const labels = el.labels ? Array.from(el.labels).map(text).join(" ").trim() : "";
    if (labels) return labels;
    const aria = (el.getAttribute("aria-label") || "").trim() || labelledBy(el);
    if (aria) return aria;
    if (el.tagName === "BUTTON") return text(el) || (el.getAttribute("title") || "").trim();
    if (el.tagName === "INPUT" && ["submit", "button", "reset"].includes(el.type)) return (el.value || "").trim();
    return (el.getAttribute("title") || "").trim();
  };
  const controls = Array.from(document.querySelectorAll("input, select, textarea, button")).filter(
    (el) => el.type !== "hidden" && visible(el),
  );
  const unnamed = controls.filter((el) => !controlName(el)).map(describe);

  // An image or drawing that is not marked decorative is named: alt, aria-label(ledby), role=img with a <title>,
  // or it sits inside an element with role=img that carries the name (the QR code's <div role=img>).
  const imageName = (el) => {
    if (el.tagName === "IMG" && (el.getAttribute("alt") || "").trim()) return true;
    if ((el.getAttribute("aria-label") || "").trim() || labelledBy(el)) return true;
    if (el.getAttribute("role") === "img" && el.querySelector(":scope > title") && text(el.querySelector(":scope > title"))) return true;
    const holder = el.parentElement ? el.parentElement.closest("[role='img']") : null;
    return holder !== null && Boolean((holder.getAttribute("aria-label") || "").trim() || labelledBy(holder));
  };
  const decorative = (el) =>
    ["presentation", "none"].includes(el.getAttribute("role") || "") || (el.tagName === "IMG" && el.getAttribute("alt") === "");
  const images = Array.from(document.querySelectorAll("img, svg, [role='img']")).filter(
    (el) => visible(el) && !(el.tagName.toLowerCase() === "svg" && el.parentElement.closest("svg")),
  );
  const unnamedImages = images.filter((el) => !decorative(el) && !imageName(el)).map(describe);

  // WCAG 2 contrast: relative luminance of the text colour against the background actually behind it (the
  // element's and its ancestors' backgrounds composited down to the first opaque one, over white).
  const rgba = (value) => {
    const parts = (value.match(/[\d.]+/g) || []).map(Number);
    return { r: parts[0] || 0, g: parts[1] || 0, b: parts[2] || 0, a: parts.length > 3 ? parts[3] : 1 };
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1,
  });
  const backgroundOf = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const colour = rgba(getComputedStyle(node).backgroundColor);
      if (colour.a > 0) layers.push(colour);
      if (colour.a >= 1) break;
    }
    return layers.reduceRight((under, top) => over(top, under), { r: 255, g: 255, b: 255, a: 1 });
  };
  const luminance = ({ r, g, b }) => {
    const channel = (v) => {
      const s = v / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  };
  const ratio = (fg, bg) => {
    const [hi, lo] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const lowContrast = [];
  const checked = [];
  const kinds = [
    ["body text", "body"],
    ["link", "a[href]"],
    ["button", "button:not([disabled])"],
    ["hint", ".hint, .empty"],
    ["muted text", ".incidents th, .facts dt, .details dt, .event time, .console-state, .message-head, .source"],
    ["badge", ".badge"],
  ];
  for (const [kind, selector] of kinds) {
    for (const el of document.querySelectorAll(selector)) {
      if (el !== document.body && (!visible(el) || !text(el))) continue;
      const style = getComputedStyle(el);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      const background = backgroundOf(el);
      const value = ratio(over(rgba(style.color), background), background);
      checked.push(kind);
      const needed = large ? 3 : 4.5;
      if (value < needed) {
        lowContrast.push(`${kind} ${describe(el)}: ${style.color} on rgb(${Math.round(background.r)}, ${Math.round(background.g)}, ${Math.round(background.b)}) is ${value.toFixed(2)}:1 (needs ${needed}:1)`);
      }
    }
  }
  return {
    lang: document.documentElement.getAttribute("lang") || "",
    title: document.title.trim(),
    h1: Array.from(document.querySelectorAll("h1")).map(text),
    controls: controls.length,
    unnamed,
    images: images.length,
    unnamedImages,
    checked: Array.from(new Set(checked)),
    lowContrast,
  };
}
