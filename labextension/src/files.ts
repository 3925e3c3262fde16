/**
 * The file browser's current folder, in the form the server extension expects.
 */
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';

/**
 * The folder the default file browser shows, relative to the server root, without a drive
 * prefix ('' is the root). New notebooks land there, like JupyterLab's own "New Notebook".
 */
export function currentFolder(browser: IDefaultFileBrowser | null): string {
  if (!browser) {
    return '';
  }
  const model = browser.model;
  return model.manager.services.contents.localPath(model.path);
}
