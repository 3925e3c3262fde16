/**
 * Command ids, registered once by the plugins and reused by the launcher, the command
 * palette and the deployments sidebar's buttons.
 */
export namespace CommandIDs {
  export const openWalkthrough = 'accel-widgets:open-walkthrough';
  export const showDeployments = 'accel-widgets:show-deployments';
  export const refresh = 'accel-widgets:refresh-deployments';
  export const copyAddress = 'accel-widgets:copy-address';
  export const copyKey = 'accel-widgets:copy-key';
  export const openScoringNotebook = 'accel-widgets:open-scoring-notebook';
  export const stopService = 'accel-widgets:stop-service';
  export const deleteModel = 'accel-widgets:delete-model';
  export const deleteImage = 'accel-widgets:delete-image';
  export const stopIdle = 'accel-widgets:stop-idle-services';
}

/** The palette category of every command here. */
export const PALETTE_CATEGORY = 'Accelerated models';
