"""Pieces of the toolkit's offline HTML pages: figures that take the page's width, and the link from a
layer x head heatmap to the attention-pattern viewer (click a cell, see that head's pattern).

Nothing here loads from the network: plotly's script is inlined once per page (`include_plotlyjs=True`)
and the viewer carries its own (`induction.plots.patterns`).
"""

from __future__ import annotations

import copy
import json

import plotly.graph_objects as go


def figure_div(fig: go.Figure, div_id: str, include_plotlyjs: bool = False) -> str:
    """`fig` as an HTML fragment that fills its container's width up to the width it was drawn for (its
    height kept), redrawn on resize, so no figure runs off the right edge of a narrow window; the
    figure object is not changed."""
    fig = copy.deepcopy(fig)
    designed = fig.layout.width
    fig.update_layout(width=None, autosize=True)
    div = fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, div_id=div_id, default_width="100%",
                      default_height=f"{fig.layout.height or 450}px", config={"responsive": True, "displaylogo": False})
    return f"<div style='max-width:{int(designed)}px'>{div}</div>" if designed else div


def heatmap_link_script(figure_id: str, view_id: str, note: str = "") -> str:
    """A script: clicking cell (layer, head) of the heatmap `figure_id` shows head LxHy in the viewer
    `view_id`; a head the viewer does not hold is said in one line under the viewer (`note`: how to add it)."""
    args = json.dumps([figure_id, view_id, note])
    return ("<script>(function(figId, viewId, note){function link(){var fig=document.getElementById(figId),"
            "view=window.InductionPatterns&&InductionPatterns.views[viewId];if(!fig||!view||!fig.on){return;}"
            "var msg=document.createElement('div');msg.className='ip-caption';view.root.appendChild(msg);"
            "fig.on('plotly_click',function(ev){var pt=ev.points[0],label='L'+pt.y+'H'+pt.x;"
            "if(view.select(label)){msg.textContent='';view.root.scrollIntoView({behavior:'smooth',block:'nearest'});}"
            "else{msg.textContent='No pattern kept for '+label+(note?' ('+note+')':'')+'.';}});}"
            "if(document.readyState==='complete'){link();}else{window.addEventListener('load',link);}"
            f"}}).apply(null,{args});</script>")
