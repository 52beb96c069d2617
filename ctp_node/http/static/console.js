// The console's only script: the map slice selector, and the supervised AIF/VOF choice
// (click on the mean pre-contrast image or a map: candidate curve, then the form's field).
"use strict";

function parseZyx(text) {
  const parts = (text || "").split(",").map(Number);
  return parts.length === 3 && parts.every(Number.isInteger) ? parts : null;
}

const mapSlice = document.getElementById("map-slice");
if (mapSlice) {
  mapSlice.addEventListener("change", () => {
    for (const img of document.querySelectorAll("img.map")) {
      img.src = img.dataset.src + "?slice=" + mapSlice.value;
    }
  });
}

const correction = document.getElementById("correction");
if (correction) {
  const series = encodeURIComponent(correction.dataset.series);
  const rows = Number(correction.dataset.rows), columns = Number(correction.dataset.columns);
  const sliceInput = document.getElementById("pick-slice");
  const image = document.getElementById("baseline");
  const candidate = document.getElementById("candidate");
  const chosen = { aif: parseZyx(correction.dataset.aif), vof: parseZyx(correction.dataset.vof), new: null };

  function place(name, zyx) {
    const marker = document.getElementById("marker-" + name);
    if (!zyx || zyx[0] !== Number(sliceInput.value)) { marker.style.display = "none"; return; }
    marker.style.left = ((zyx[2] + 0.5) / columns * image.clientWidth) + "px";
    marker.style.top = ((zyx[1] + 0.5) / rows * image.clientHeight) + "px";
    marker.style.display = "block";
  }
  function placeAll() { for (const name of ["aif", "vof", "new"]) place(name, chosen[name]); }
  const background = document.getElementById("pick-background");
  function showSlice() {
    // the mean pre-contrast image, or a map of this result: both one pixel per voxel
    image.src = background && background.value !== ""
      ? "/jobs/" + correction.dataset.job + "/maps/" + background.value + "/voxels.png?slice=" + sliceInput.value
      : "/series/" + series + "/baseline.png?slice=" + sliceInput.value;
  }
  if (background) background.addEventListener("change", showSlice);
  image.addEventListener("load", placeAll);
  sliceInput.addEventListener("change", showSlice);
  image.addEventListener("click", (event) => {
    const box = image.getBoundingClientRect();
    const x = Math.min(columns - 1, Math.floor((event.clientX - box.left) / box.width * columns));
    const y = Math.min(rows - 1, Math.floor((event.clientY - box.top) / box.height * rows));
    const z = Number(sliceInput.value);
    chosen.new = [z, y, x];
    placeAll();
    const target = document.querySelector("input[name=target]:checked").value;
    document.getElementById(target).value = z + "," + y + "," + x;
    candidate.src = "/series/" + series + "/curve.png?z=" + z + "&y=" + y + "&x=" + x;
    candidate.dataset.zyx = z + "," + y + "," + x;
  });
  showSlice();
}
