import { LabIcon } from '@jupyterlab/ui-components';

/** A chip with a rising curve: the AIOS sidebar's tab icon (themed through jp-icon3). */
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M7 2h2v2h2V2h2v2h2V2h2v2.1A3 3 0 0 1 19.9 7H22v2h-2v2h2v2h-2v2h2v2h-2.1A3 3 0 0 1 17 19.9V22h-2v-2h-2v2h-2v-2H9v2H7v-2.1A3 3 0 0 1 4.1 17H2v-2h2v-2H2v-2h2V9H2V7h2.1A3 3 0 0 1 7 4.1V2zm0 4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h10a1 1 0 0 0 1-1V7a1 1 0 0 0-1-1H7z"/>
    <path d="M7.5 15.5l2.6-3.2 2.1 1.6 3.8-5.4 1.2.9-4.7 6.6-2.1-1.6-1.8 2.1z"/>
  </g>
</svg>`;

export const aiosIcon = new LabIcon({ name: 'aios-lab:sidebar', svgstr });
