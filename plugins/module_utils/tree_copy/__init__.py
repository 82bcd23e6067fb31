# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copy a tree to another host over ssh in N parallel streams, resumable (strata.ops.data_transfer).

One ssh stream is capped at about window/RTT on a long link; N streams, each its own TCP
connection, scale until the disk, the CPU or the link is the limit. The work is split here and
carried by the well-kept tools:

* ``plan`` (pure): the source tree's entries, the partition of the files that need sending (what
  ``rsync -n -i`` lists) into streams balanced by bytes, like fpart: small files grouped, a large
  file cut into byte ranges spread over the streams; hard-link groups never split (``rsync -H``
  links only within one run).
* ``remote``: the ssh and rsync command lines, the one-call probe of the destination (free space,
  chunk markers) and the range receiver (a few lines of Python run by ssh on the destination:
  writes one byte range of a large file in place and records how much it wrote, so a rerun sends
  only the rest of that range).
* ``streams``: the streams running in threads - one ``rsync --files-from`` for the grouped files,
  then the ranges - with bandwidth limits, retries of a stream whose host went away, the progress
  file, and the files that could not be read.

rsync does what it is best at (attributes, links, sparse files, ``--partial`` for the files it
sends); only the planning, the ranges of large files and the bookkeeping are written here.
"""
