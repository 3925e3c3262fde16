/**
 * accel-widgets for JupyterLab: one plugin per feature.
 *
 * - `walkthrough.ts`: the launcher card and palette command that open the walkthrough.
 * - `sidebar.ts`: the "Deployments" sidebar of services and models, with its commands.
 */
import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { sidebarPlugin } from './sidebar';
import { walkthroughPlugin } from './walkthrough';

const plugins: JupyterFrontEndPlugin<void>[] = [
  walkthroughPlugin,
  sidebarPlugin
];

export default plugins;
