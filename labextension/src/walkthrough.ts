/**
 * The "Accelerated model walkthrough" command, on the launcher, in the command palette and
 * in File > New: copy the walkthrough notebook into the current folder (a user's own copy
 * is kept) and open it.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, showErrorMessage } from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';

import { copyWalkthrough } from './api';
import { CommandIDs, PALETTE_CATEGORY } from './commands';
import { currentFolder } from './files';
import { walkthroughCardUrl, walkthroughIcon } from './icons';

export const walkthroughPlugin: JupyterFrontEndPlugin<void> = {
  id: 'accel-widgets:walkthrough',
  description:
    'Opens the accelerated model walkthrough from the launcher and the palette.',
  autoStart: true,
  requires: [IDocumentManager],
  optional: [IDefaultFileBrowser, ILauncher, ICommandPalette, IMainMenu],
  activate: (
    app: JupyterFrontEnd,
    docManager: IDocumentManager,
    browser: IDefaultFileBrowser | null,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    mainMenu: IMainMenu | null
  ) => {
    app.commands.addCommand(CommandIDs.openWalkthrough, {
      label: 'Accelerated model walkthrough',
      caption:
        'Copy the walkthrough notebook into this folder (your own copy is kept) and open it: ' +
        'check capacity, convert a model, deploy it as a gRPC service and score a picture',
      icon: args => (args.isPalette ? undefined : walkthroughIcon),
      execute: async args => {
        // The launcher passes the folder it was opened in; the palette uses the file browser's.
        const folder =
          typeof args.cwd === 'string'
            ? app.serviceManager.contents.localPath(args.cwd)
            : currentFolder(browser);
        try {
          const { path } = await copyWalkthrough(folder);
          return docManager.openOrReveal(path);
        } catch (error) {
          await showErrorMessage(
            'Cannot open the walkthrough',
            error instanceof Error ? error : new Error(String(error))
          );
          return undefined;
        }
      }
    });

    launcher?.add({
      command: CommandIDs.openWalkthrough,
      category: 'Notebook',
      rank: 100,
      kernelIconUrl: walkthroughCardUrl
    });
    palette?.addItem({
      command: CommandIDs.openWalkthrough,
      category: PALETTE_CATEGORY
    });
    mainMenu?.fileMenu.newMenu.addItem({
      command: CommandIDs.openWalkthrough,
      rank: 30
    });
  }
};
