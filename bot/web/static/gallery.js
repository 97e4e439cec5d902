// Atelier gallery: infinite scroll over keyset pages, copy buttons, spoiler reveal, local times, delete confirm.
"use strict";

function loadMore(marker, observer) {
  const url = marker.dataset.next;
  if (!url || marker.dataset.loading) return;
  marker.dataset.loading = "1";
  fetch(url, { credentials: "same-origin" })
    .then((r) => (r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status))))
    .then((html) => {
      const doc = new DOMParser().parseFromString(html, "text/html");
      const grid = document.getElementById("grid");
      observer.unobserve(marker);
      marker.remove();
      for (const node of Array.from(doc.body.children)) {
        grid.appendChild(document.adoptNode(node));
      }
      watch(observer);
    })
    .catch((err) => {
      marker.textContent = "Could not load more (" + err.message + "); scroll to retry.";
      delete marker.dataset.loading;
    });
}

function watch(observer) {
  const marker = document.getElementById("more");
  if (marker) observer.observe(marker);
}

function setup() {
  if (document.getElementById("grid") && "IntersectionObserver" in window) {
    const observer = new IntersectionObserver((entries) => {
      for (const e of entries) if (e.isIntersecting) loadMore(e.target, observer);
    }, { rootMargin: "600px" });
    watch(observer);
  }
  document.addEventListener("click", (ev) => {
    const t = ev.target;
    if (t.matches && t.matches("[data-copy]")) {
      const text = document.getElementById(t.dataset.copy).textContent;
      navigator.clipboard.writeText(text).then(() => { t.textContent = "Copied"; }, () => { t.textContent = "Select and copy"; });
    } else if (t.classList && t.classList.contains("spoiler")) {
      ev.preventDefault();
      t.classList.remove("spoiler");
    }
  });
  document.addEventListener("submit", (ev) => {
    const msg = ev.target.dataset.confirm;
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });
  for (const el of document.querySelectorAll("time[data-ts]")) {
    el.textContent = new Date(Number(el.dataset.ts) * 1000).toLocaleString();
  }
}

document.addEventListener("DOMContentLoaded", setup);
