/**
 * The extension's icons, themed like JupyterLab's own (`jp-icon3` follows the theme).
 */
import { LabIcon } from '@jupyterlab/ui-components';

/** A server rack with a status light: the deployments sidebar. */
const deploymentsSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 3h16a1 1 0 0 1 1 1v5a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1zm0 11h16a1 1 0 0 1 1 1v5a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1v-5a1 1 0 0 1 1-1zm2-8.5v2h2v-2H6zm0 11v2h2v-2H6zm4-11v2h8v-2h-8zm0 11v2h8v-2h-8z"/>
  </g>
</svg>`;

/** A lightning bolt on a notebook page: the accelerated model walkthrough. */
const walkthroughSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M6 2h9l5 5v13a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2zm0 2v16h12V8h-4V4H6z"/>
    <path d="M13 9l-4 6h3l-1 4 4-6h-3z"/>
  </g>
</svg>`;

export const deploymentsIcon = new LabIcon({
  name: 'accel-widgets:deployments',
  svgstr: deploymentsSvg
});

export const walkthroughIcon = new LabIcon({
  name: 'accel-widgets:walkthrough',
  svgstr: walkthroughSvg
});

/** The launcher card's picture (the Notebook row shows an image, like a kernel logo). */
const walkthroughCardSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="52" height="52" viewBox="0 0 24 24">
  <path fill="#e0e0e0" d="M6 2h9l5 5v13a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2z"/>
  <path fill="#9e9e9e" d="M15 2l5 5h-4a1 1 0 0 1-1-1z"/>
  <path fill="#f37726" d="M13.5 8.5l-5 7h3.5l-1.5 5 5.5-7.5h-3.5z"/>
</svg>`;

export const walkthroughCardUrl = `data:image/svg+xml,${encodeURIComponent(walkthroughCardSvg)}`;
