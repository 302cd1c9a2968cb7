/** SVG sparklines and line charts drawn from the pure geometry in model.ts. */
import * as React from 'react';

import { domainOf, formatNumber, linePath, sparkPath, ticks } from './model';

export function Sparkline(props: { values: number[]; width?: number; height?: number; log?: boolean; title?: string }): JSX.Element | null {
  const width = props.width ?? 64;
  const height = props.height ?? 16;
  const d = sparkPath(props.values, width, height, props.log ?? false);
  if (!d) {
    return null;
  }
  return (
    <svg className="aios-sparkline" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={props.title}>
      {props.title && <title>{props.title}</title>}
      <path d={d} />
    </svg>
  );
}

export interface ISeries {
  label: string;
  points: Array<[number, number]>;
  /** a CSS class that sets the stroke (aios-series-0 .. aios-series-3) */
  className: string;
}

/** A line chart of one or more series against the step, with axis ticks and a legend. */
export function LineChart(props: { title: string; series: ISeries[]; width?: number; height?: number }): JSX.Element {
  const width = props.width ?? 420;
  const height = props.height ?? 180;
  const left = 48;
  const bottom = 22;
  const top = 8;
  const right = 18;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const shown = props.series.filter(s => s.points.length > 0);
  const dom = domainOf(shown.map(s => s.points));
  if (!dom) {
    return (
      <div className="aios-chart aios-chart-empty">
        <div className="aios-chart-title">{props.title}</div>
        <div className="aios-empty">No points yet.</div>
      </div>
    );
  }
  const xTicks = ticks(dom.x[0], dom.x[1], 5);
  const yTicks = ticks(dom.y[0], dom.y[1], 5);
  const sx = (x: number) => left + ((x - dom.x[0]) / (dom.x[1] - dom.x[0])) * plotW;
  const sy = (y: number) => top + plotH - ((y - dom.y[0]) / (dom.y[1] - dom.y[0])) * plotH;
  return (
    <div className="aios-chart">
      <div className="aios-chart-title">
        {props.title}
        <span className="aios-legend">
          {shown.map(s => (
            <span key={s.label} className={`aios-legend-item ${s.className}`}>
              <svg width="14" height="4" aria-hidden="true">
                <line x1="0" y1="2" x2="14" y2="2" />
              </svg>
              {s.label}
            </span>
          ))}
        </span>
      </div>
      <svg className="aios-chart-svg" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={props.title}>
        <g className="aios-axis">
          {yTicks.map(t => (
            <g key={`y${t}`}>
              <line className="aios-grid" x1={left} x2={width - right} y1={sy(t)} y2={sy(t)} />
              <text x={left - 4} y={sy(t) + 3} textAnchor="end">
                {formatNumber(t)}
              </text>
            </g>
          ))}
          {xTicks.map(t => (
            <text key={`x${t}`} x={sx(t)} y={height - 6} textAnchor="middle">
              {formatNumber(t)}
            </text>
          ))}
          <line x1={left} x2={left} y1={top} y2={top + plotH} />
          <line x1={left} x2={width - right} y1={top + plotH} y2={top + plotH} />
        </g>
        <g transform={`translate(${left}, ${top})`}>
          {shown.map(s => (
            <path key={s.label} className={`aios-line ${s.className}`} d={linePath(s.points, { width: plotW, height: plotH }, dom)} />
          ))}
        </g>
      </svg>
    </div>
  );
}
