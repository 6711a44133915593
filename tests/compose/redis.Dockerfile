# Stand-in for redis:7 (tests/compose/setup.sh): Debian bookworm's redis-server 7.0, data in
# /data, and like the official image's entrypoint, protected mode off when no config file is
# given (other containers connect without a password).
FROM trainhub-standin/bookworm:minbase
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY standin-redis.sh /usr/local/bin/standin-redis.sh
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["bash", "/usr/local/bin/standin-redis.sh"]
CMD ["redis-server"]
